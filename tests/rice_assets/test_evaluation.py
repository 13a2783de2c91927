"""Evaluation, champion, occlusion and prediction assets on a tiny trained `dose` ablation: one decision
rule everywhere, the registered champion is what was evaluated, stale cells are refused."""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from data_catalog import Catalog, PatientRecord
from rice_assets.html_report import complete_report_path, outcome_lines, write_report
from rice_assets.stages import STAGES
from rice_models.ensemble import DecisionRule
from rice_models.occlusion import load_model_input
from rice_models.registry import champion_model_name, champion_uri
from rice_models.tracking import configure_mlflow, load_model
from tests.rice_assets.helpers import materialize
from tests.rice_assets.test_training import fake_registered_cohort

TRAINING = {"epochs": 3, "augment": False}
CHAMPION = champion_model_name("quick")


def train_dose_ablation(resources, instance, folds=range(5), training=TRAINING) -> None:
    """Declare the experiment (cv_splits) and train `dose` cells with the same settings."""
    config = {"ops": {name: {"config": training} for name in ("cv_splits", "fold_models")}}
    materialize(
        ["cv_splits"], resources, instance, run_config={"ops": {"cv_splits": config["ops"]["cv_splits"]}}
    )
    for fold in folds:
        materialize(
            ["fold_models"],
            resources,
            instance,
            f"dose|{fold}",
            {"ops": {"fold_models": config["ops"]["fold_models"]}},
        )


@pytest.fixture
def trained_dose_ablation(rice_paths, resources, instance):
    fake_registered_cohort(rice_paths, n=16, n_test=4, n_unlabelled=1)
    instance.add_dynamic_partitions("patients", Catalog(rice_paths.catalog).patient_ids())
    instance.add_dynamic_partitions("unlabelled_patients", ["U00"])
    train_dose_ablation(resources, instance)
    return rice_paths


def _evaluate(resources, instance, voting="majority", raise_on_error=True):
    config = {"ops": {"evaluation_tables": {"config": {"n_boot": 200, "voting": voting}}}}
    return materialize(
        ["evaluation_tables"], resources, instance, run_config=config, raise_on_error=raise_on_error
    )


@pytest.mark.slow
def test_tables_champion_occlusion_and_prediction(trained_dose_ablation, resources, instance) -> None:
    paths = trained_dose_ablation
    catalog = Catalog(paths.catalog)
    result = _evaluate(resources, instance, voting="soft")
    metadata = result.asset_materializations_for_node("evaluation_tables")[0].metadata
    version = metadata["experiment_version"].value
    markdown = metadata["ablation"].value
    assert "synthetic" not in markdown and "real" in markdown and "0.916" in markdown and version in markdown
    (row,) = catalog.query("SELECT * FROM ablation WHERE test_f1 IS NOT NULL")
    assert row["combination"] == "dose" and row["test_f1_lo"] <= row["test_f1"] <= row["test_f1_hi"]
    assert row["oof_f1_lo"] <= row["oof_f1"] <= row["oof_f1_hi"] and row["n_oof"] == 12 and row["champion"]
    assert (row["profile"], row["experiment_version"], row["voting"]) == ("quick", version, "soft")
    tests = catalog.query("SELECT * FROM predictions WHERE scope = 'test' ORDER BY patient_id")
    assert len(tests) == 4 and {t["experiment_version"] for t in tests} == {version}
    assert {r["scope"] for r in catalog.query("SELECT DISTINCT scope FROM metrics")} == {"cv_val", "oof"}
    out = paths.lake_dir("evaluation_tables", "__all__", "quick")
    for name in ("ablation.csv", "cells.csv", "test_predictions.csv", "ablation.png", "roc.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()  # the HTML report, attached to the materialisation
    assert metadata["html_report"].value == str(out / "report.html")
    assert version in page and "No occlusion map of the current champion yet" in page
    assert catalog.get_artifact("evaluation_tables@quick/__all__/html_report") is not None

    champion = materialize(["champion_model"], resources, instance)
    metadata = champion.asset_materializations_for_node("champion_model")[0].metadata
    assert metadata["combination"].value == "dose" and metadata["voting"].value == "soft"
    tracking_uri = resources["mlflow"].tracking_uri
    configure_mlflow(tracking_uri, paths.mlartifacts)
    client = MlflowClient(tracking_uri=tracking_uri)
    tags = client.get_model_version_by_alias(CHAMPION, "champion").tags
    assert tags["combination"] == "dose" and len(tags["fold_versions"].split(",")) == 5
    assert tags["rice.experiment_version"] == version and tags["voting"] == "soft"
    (stored,) = catalog.query("SELECT * FROM models WHERE alias = 'champion'")
    assert stored["experiment_version"] == version and stored["profile"] == "quick"

    # The registered champion, loaded by its alias in a fresh process, gives the table's test probabilities.
    xs = np.stack(
        [
            load_model_input(paths.lake_dir("registered_volumes", t["patient_id"], "quick"), "dose")
            for t in tests
        ]
    )
    np.save(paths.home / "x.npy", xs)
    code = (
        "import json, sys, mlflow, numpy as np; "
        f"m = mlflow.pyfunc.load_model({champion_uri(CHAMPION)!r}); "
        "x = np.load(sys.argv[1]); "
        "print(json.dumps([float(m.predict(x[i:i + 1])[0]) for i in range(len(x))]))"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(paths.home / "x.npy")],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        check=True,
    )
    served = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert served == [t["prob_rice"] for t in tests], "scoring the champion reproduces the table exactly"
    folds = [
        load_model(f"models:/rice-net-quick/{v.split(':')[1]}") for v in tags["fold_versions"].split(",")
    ]
    with torch.no_grad():
        soft_mean = float(
            torch.stack([torch.softmax(m(torch.as_tensor(xs[:1])), 1)[0, 1] for m in folds]).mean()
        )
    assert served[0] == pytest.approx(soft_mean, abs=1e-6)
    files = paths.home.rglob("*")
    weights = [p for p in files if p.suffix in (".pt", ".pth", ".pkl") and p.stat().st_size > 1e5]
    assert len(weights) == 5, f"each fold network's weights stored once, the champion holds none: {weights}"

    test_id = tests[0]["patient_id"]
    occlusion = materialize(["occlusion_maps"], resources, instance, test_id)
    assert occlusion.success
    reference = nib.load(paths.lake_dir("registered_volumes", test_id, "quick") / "dose.nii.gz")
    joint = nib.load(paths.lake_dir("occlusion_maps", test_id, "quick") / "occlusion_all.nii.gz")
    assert joint.shape == reference.shape and np.allclose(joint.affine, reference.affine)
    (occluded,) = catalog.artifacts("occlusion_maps", test_id, profile="quick")[:1]
    assert (
        occluded.metadata["experiment_version"] == version and occluded.metadata["rule"]["voting"] == "soft"
    )
    assert occluded.metadata["predicted"] == tests[0]["predicted"], "same rule, same class as the table"

    prediction = materialize(["patient_predictions"], resources, instance, "U00")
    metadata = prediction.asset_materializations_for_node("patient_predictions")[0].metadata
    assert metadata["model"].value == CHAMPION and 0 <= metadata["prob_rice"].value <= 1
    (stored,) = catalog.query("SELECT * FROM predictions WHERE scope = 'inference'")
    assert stored["patient_id"] == "U00" and stored["model_version"] == metadata["model_version"].value
    assert stored["experiment_version"] == version and stored["profile"] == "quick"
    prob = metadata["prob_rice"].value
    expected = "rice" if DecisionRule("soft").decide(np.array([[prob]]))[1][0] == 1 else "recurrence"
    assert metadata["predicted"].value == expected, "the rule's strict threshold, as in the table"

    # `rice report`'s complete page: the champion, its overlay and its prediction, all of this experiment.
    html, content = write_report(paths, catalog, "quick", complete_report_path(paths, "quick"))
    assert html == paths.home / "reports" / "quick" / "report.html"
    assert set(content.overlays) == {test_id} and [r["patient_id"] for r in content.inference] == ["U00"]
    assert any(m["alias"] == "champion" and m["registered_name"] == CHAMPION for m in content.models)
    assert len([m for m in content.models if m["fold"] is not None]) == 5
    assert len(content.cohort_summary.qc_rows) == 17 and content.cohort == "real"
    lines = outcome_lines(content)
    assert f"champion: dose (models:/{CHAMPION}@champion" in lines and "U00:" in lines


@pytest.mark.slow
def test_a_stale_or_missing_cell_is_refused_by_name(rice_paths, resources, instance) -> None:
    fake_registered_cohort(rice_paths, n=16, n_test=4)
    train_dose_ablation(resources, instance, folds=range(4), training={"epochs": 1, "augment": False})
    # One cell trained with other settings than the declared experiment: stale.
    materialize(
        ["fold_models"],
        resources,
        instance,
        "dose|4",
        {"ops": {"fold_models": {"config": {"epochs": 2, "augment": False}}}},
    )
    run = materialize(
        ["evaluation_tables"], resources, instance, raise_on_error=False
    )  # the asset refuses by itself
    assert not run.success and "dose|4 stale" in str(run.all_events)
    (evaluation_stage,) = [s for s in STAGES if s.name == "evaluation"]
    gated = materialize(evaluation_stage.selection(), resources, instance, raise_on_error=False)
    (check,) = gated.get_asset_check_evaluations()
    assert not check.passed and check.check_name == "experiment_is_complete"
    assert "dose|4 stale" in check.description
    assert not gated.asset_materializations_for_node("evaluation_tables"), "blocked by the check"
    materialize(
        ["fold_models"],
        resources,
        instance,
        "dose|4",
        {"ops": {"fold_models": {"config": {"epochs": 1, "augment": False}}}},
    )
    assert _evaluate(resources, instance).success


def test_patient_predictions_refuses_a_labelled_patient(rice_paths, resources, instance) -> None:
    Catalog(rice_paths.catalog).upsert_patients([PatientRecord("L1", label="rice")])
    instance.add_dynamic_partitions("patients", ["L1"])
    instance.add_dynamic_partitions("unlabelled_patients", ["L1"])
    result = materialize(["patient_predictions"], resources, instance, "L1", raise_on_error=False)
    assert not result.success
    assert "patient L1 is labelled" in str(result.all_events)
