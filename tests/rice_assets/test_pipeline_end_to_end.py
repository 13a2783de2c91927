"""`rice run` over every stage on a small synthetic cohort (two combinations, one epoch)."""

import pytest

from data_catalog import Catalog
from rice_assets.runner import run_pipeline
from rice_models.synth import generate_cohort


@pytest.mark.slow
def test_whole_pipeline_on_a_synthetic_cohort(rice_paths, instance):
    generate_cohort(rice_paths.landing, n_patients=13, seed=8, spacing_mm=4.0, n_test=3, n_unlabelled=1)
    lines: list[str] = []
    summary = run_pipeline(
        rice_paths,
        instance,
        echo=lines.append,
        op_config={"fold_models": {"epochs": 1, "augment": False}, "evaluation_tables": {"n_boot": 100}},
        combinations=["dose", "postop+event+dose"],
    )
    assert summary.ok, summary.failures
    stages = [line.split()[1] for line in lines]
    for stage in ("cohort", "preprocessing", "cv_splits", "training", "evaluation", "champion", "occlusion"):
        assert stage in stages, stage
    assert sum(stage == "training" for stage in stages) == 10
    assert sum(stage == "occlusion" for stage in stages) == 3
    assert sum(stage == "prediction" for stage in stages) == 1

    catalog = Catalog(rice_paths.catalog)
    rows = {r["combination"]: r for r in catalog.query("SELECT * FROM ablation")}
    assert set(rows) == {"dose", "postop+event+dose"}
    assert all(r["n_test"] == 3 for r in rows.values())
    (champion,) = catalog.query("SELECT combination FROM models WHERE alias = 'champion'")
    assert champion["combination"] in rows
    assert len(catalog.query("SELECT * FROM predictions WHERE scope = 'inference'")) == 1
    report = (rice_paths.lake_dir("evaluation_tables", "__all__", "quick") / "report.md").read_text()
    assert "synthetic" in report and "quick" in report
