"""`rice run` over every stage on a small synthetic cohort (two combinations, one epoch), then the daemon
as `rice dev` runs it: a new unlabelled patient copied into the landing zone gets its prediction (with
its report and occlusion overlay) with no other command, and `rice predict` on the same folder gives the
same probability."""

import csv
import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from data_catalog import Catalog
from rice_assets.cli import main
from rice_models.synth import generate_cohort
from tests.rice_assets.helpers import daemon_instance, rice_run


def _land(landing: Path, source: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    """Copy these patients' folders from `source` and append their rows to cohort.csv (header if new)."""
    landing.mkdir(parents=True, exist_ok=True)
    for row in rows:
        shutil.copytree(source / row["patient_id"], landing / row["patient_id"])
    cohort = landing / "cohort.csv"
    new = not cohort.exists()
    with cohort.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _prediction_of(instance: dg.DagsterInstance, pid: str, timeout: float) -> dg.AssetMaterialization | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("patient_predictions"), asset_partitions=[pid]),
            limit=1,
        ).records
        if found:
            return found[0].asset_materialization
        time.sleep(3)
    return None


@pytest.mark.slow
def test_whole_pipeline_then_a_new_patient_is_predicted_by_the_daemon(
    rice_home, tmp_path, monkeypatch, capsys
) -> None:
    paths = rice_home
    source = tmp_path / "synth"
    generate_cohort(source, n_patients=14, seed=8, spacing_mm=4.0, n_test=3, n_unlabelled=2)
    rows = list(csv.DictReader((source / "cohort.csv").open()))
    fields = list(rows[0])
    newcomer = next(r for r in reversed(rows) if not r["label"])
    _land(paths.landing, source, [r for r in rows if r is not newcomer], fields)
    shutil.copy(source / "ground_truth.json", paths.landing / "ground_truth.json")

    lines: list[str] = []
    summary = rice_run(
        paths,
        echo=lines.append,
        op_config={"fold_models": {"epochs": 1, "augment": False}, "evaluation_tables": {"n_boot": 100}},
        combinations=["dose", "postop+event+dose"],
    )
    assert summary.ok, (summary.failures, lines)
    stages = [run.stage for run in summary.runs]
    assert stages.count("training") == 10 and stages.count("occlusion") == 3
    assert stages.count("prediction") == 1 and "champion+evaluation" in stages
    catalog = Catalog(paths.catalog)
    rows_ablation = {r["combination"]: r for r in catalog.query("SELECT * FROM ablation")}
    assert set(rows_ablation) == {"dose", "postop+event+dose"}
    assert all(r["n_test"] == 3 for r in rows_ablation.values())
    report = (paths.lake_dir("evaluation_tables", "__all__", "quick") / "report.md").read_text()
    assert "synthetic" in report and "quick" in report

    # `rice dev`'s daemon: the newcomer is picked up, preprocessed and predicted with no other command
    monkeypatch.setenv("RICE_SETTLE_SECONDS", "2")
    pid = newcomer["patient_id"]
    with daemon_instance(paths, automation=True) as instance:
        _land(paths.landing, source, [newcomer], fields)
        materialization = _prediction_of(instance, pid, timeout=420)
        assert materialization is not None, (
            f"no prediction for {pid}; daemon log: {paths.dagster_home}/daemon.log"
        )
    out = paths.lake_dir("patient_predictions", pid, "quick")
    asset = json.loads((out / "prediction.json").read_text())
    assert (out / "overlay.png").stat().st_size > 0 and f"# Patient {pid}" in (out / "report.md").read_text()
    assert len(catalog.query("SELECT * FROM predictions WHERE scope = 'inference'")) == 2

    # `rice predict` on the same folder: the same probability, one JSON object
    capsys.readouterr()
    argv = ["predict", str(paths.landing / pid), "--json", "--dose-kind", newcomer["dose_kind"]]
    if newcomer["n_fractions"]:
        argv += ["--n-fractions", newcomer["n_fractions"]]
    if newcomer.get("prescription_gy"):
        argv += ["--prescription-gy", newcomer["prescription_gy"]]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["probability_rice"] == asset["probability_rice"]
    assert printed["predicted"] in ("rice", "recurrence") and printed["predicted"] == asset["predicted"]
    for key in ("patient_id", "model_version", "combination", "experiment_version"):
        assert printed[key] == asset[key], key
    assert Path(printed["report"]).is_file() and Path(printed["overlay"]).is_file()


def test_rice_predict_refuses_without_a_champion(rice_home, tmp_path, capsys) -> None:
    folder = tmp_path / "P1"
    folder.mkdir()
    assert main(["predict", str(folder)]) == 1
    assert "no champion model for profile quick" in capsys.readouterr().err
