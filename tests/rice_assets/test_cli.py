import os
import subprocess
import sys

import yaml

from data_catalog import Catalog, SplitRecord
from rice_assets.cli import main
from rice_assets.home import dagster_yaml, prepare_home, thread_environment, threads_per_run
from rice_models.paths import RicePaths
from tests.conftest import make_patient, write_cohort


def test_validate_exit_codes_and_messages(tiny_landing, tmp_path, capsys):
    landing = tiny_landing(2)
    assert main(["validate", "--landing", str(landing)]) == 0
    assert "2 valid patient(s), 0 rejected" in capsys.readouterr().out

    make_patient(landing, "P3", channels=("mri_postop",))
    rows = [{"patient_id": p, "label": "rice", "dose_kind": "total"} for p in ("P1", "P2", "P3")]
    write_cohort(landing, rows)
    assert main(["validate", "--landing", str(landing)]) == 1
    captured = capsys.readouterr()
    assert "patient P3" in captured.err and "missing mri_event" in captured.err
    assert "2 valid patient(s), 1 rejected" in captured.out

    assert main(["validate", "--landing", str(tmp_path / "nowhere")]) == 2
    assert "cohort.csv not found" in capsys.readouterr().err


def test_prepare_home_writes_dagster_yaml_with_telemetry_off(tmp_path, monkeypatch):
    for name in ("RICE_HOME", "RICE_LANDING", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "home" / "landing")
    prepare_home(paths)
    config = yaml.safe_load((paths.dagster_home / "dagster.yaml").read_text())
    assert config["telemetry"]["enabled"] is False
    runs = config["concurrency"]["runs"]["max_concurrent_runs"]
    assert runs == os.cpu_count()
    assert config["concurrency"]["pools"]["default_limit"] == runs, "CPU-only: cells train like any run"
    assert config["concurrency"]["pools"]["granularity"] == "run"
    assert config["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
    (paths.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prepare_home(paths)
    assert "concurrency" not in (paths.dagster_home / "dagster.yaml").read_text(), "a user's file is kept"
    assert all(p.is_dir() for p in (paths.landing, paths.lake, paths.mlartifacts))

    assert os.environ["DAGSTER_HOME"] == str(paths.dagster_home)


def test_each_run_gets_the_cores_divided_among_concurrent_runs(tmp_path, monkeypatch):
    assert "default_limit: 4" in dagster_yaml(cores=8, gpus=4), "one slot per GPU"
    assert "default_limit: 8" in dagster_yaml(cores=8, gpus=0)
    (tmp_path / "dagster.yaml").write_text(dagster_yaml(cores=2, gpus=0))
    assert threads_per_run(tmp_path, cores=8) == 4, "8 cores, 2 runs at once"
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    assert threads_per_run(tmp_path, cores=8) == 1, "no run limit: as many runs as cores"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", raising=False)  # set where ANTs was loaded
    env = thread_environment(tmp_path)
    assert "OMP_NUM_THREADS" not in env, "the user's own setting stays"
    assert env["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == str(threads_per_run(tmp_path))


def test_processes_opening_a_prepared_instance_at_once_do_not_race(tmp_path, monkeypatch):
    """The daemon, the webserver and Celery workers open the instance together; on a fresh SQLite instance
    that raced on the schema stamp ("more than one head present") about one time in two before
    prepare_home created the storage itself."""
    for name in ("RICE_HOME", "RICE_LANDING", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "home" / "landing")
    prepare_home(paths)
    code = f"import dagster as dg; dg.DagsterInstance.from_config({str(paths.dagster_home)!r}).dispose()"
    command = [sys.executable, "-c", code]
    opens = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [stderr for p in opens for stderr in [p.communicate()[1]] if p.returncode != 0]
    assert not errors, errors[0][-2000:]


def test_report_prints_the_table_and_where_the_results_are(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RICE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RICE_LANDING", raising=False)
    monkeypatch.delenv("RICE_PROFILE", raising=False)
    assert main(["report"]) == 1
    assert "no report at" in capsys.readouterr().err

    paths = RicePaths.from_env()
    report = paths.lake_dir("evaluation_tables", "__all__", "quick") / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("### Ablation: macro F1 by input combination\n| `dose` | 0.8 |\n")
    (paths.lake / "occlusion_maps" / "quick" / "P1").mkdir(parents=True)
    (paths.lake / "occlusion_maps" / "quick" / "P1" / "overlay.png").write_bytes(b"png")
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "Ablation: macro F1" in out and str(report) in out
    assert "(1 test patient(s))" in out and str(paths.lake / "occlusion_maps" / "quick" / "P1") in out
    assert main(["report", "--profile", "paper"]) == 1, "each profile has its own report"
    assert "evaluation_tables/paper" in capsys.readouterr().err


def test_split_shows_and_resets_the_frozen_split(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RICE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RICE_PROFILE", raising=False)
    catalog = Catalog(RicePaths.from_env().catalog)
    catalog.replace_splits(
        [SplitRecord("T1", "test"), SplitRecord("D1", "train", 0)], profile="quick", experiment_version="e1"
    )
    assert main(["split"]) == 0
    out = capsys.readouterr().out
    assert "quick: 1 test patient(s) frozen, 1 development" in out and "paper: 0 test" in out
    assert main(["split", "--reset", "--reason", "new protocol"]) == 0
    assert "profile quick: split reset" in capsys.readouterr().out
    assert catalog.split_memory("quick").test == frozenset()
    assert catalog.query("SELECT profile, reason FROM split_resets") == [
        {"profile": "quick", "reason": "new protocol"}
    ]


def test_synth_reports_progress_in_plain_lines_when_not_a_terminal(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "landing"), "--patients", "2", "--spacing", "8"]) == 0
    captured = capsys.readouterr()
    assert "writing 2 synthetic patients" in captured.out and "wrote 2 synthetic patients" in captured.out
    progress = [line for line in captured.err.splitlines() if line.startswith("synthesising patients:")]
    assert [line.split()[2] for line in progress] == ["1/2", "2/2"]
    assert "\r" not in captured.err, "no bar when the output is not a terminal"
