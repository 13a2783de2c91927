import os
import subprocess
import sys

import dagster as dg

from rice_assets.constants import PATIENTS_PARTITION
from rice_assets.definitions import defs


def test_definitions_load_and_every_job_resolves() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        assert job.name
    assert repo.get_job("ingest_cohort")
    for stage in ("cohort", "preprocessing", "cv_splits", "training", "evaluation", "champion"):
        assert repo.get_job(f"{stage}_stage")
    assert repo.get_job("training_stage").partitions_def is not None


def test_loading_the_definitions_imports_no_heavy_library_and_freezes_what_it_loaded() -> None:
    """Every run process loads the definitions: a preprocessing run must not pay for torch, MONAI and
    MLflow (~6 s of imports on 2 cores, 132 runs in the demo), nor a training run for ANTs and
    scikit-learn (~2 s); the steps that use them import them. What the definitions loaded is frozen
    out of garbage collection (rice_models.process)."""
    heavy = "{'torch', 'monai', 'mlflow', 'torchvision', 'ants', 'sklearn', 'matplotlib'}"
    code = (
        "import gc, sys, rice_assets.definitions; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}), gc.get_freeze_count() > 50_000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True", out.stdout


def test_rice_runs_daemon_gets_one_itk_thread_per_run() -> None:
    """`rice run` imports the definitions before it starts the daemon: loading them must not set ITK's
    thread count (ANTs' import did, to 2, so the daemon's runs registered on 2 threads, not
    repeatably, instead of the cores / concurrent runs that `thread_environment` gives)."""
    code = (
        "import os, sys, rice_assets.definitions, rice_assets.runner; "
        "from rice_assets.home import thread_environment; from pathlib import Path; "
        "print(os.environ.get('ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS'), "
        "'ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS' in thread_environment(Path(sys.argv[1])))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code, "/nonexistent"], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["None", "True"], out.stdout + out.stderr


def test_asset_graph_names_and_partitions() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "cohort_manifest" in keys
    assert defs.resolve_sensor_def("landing_zone_sensor")
    assert defs.resolve_sensor_def("rice_automation")
    assert defs.resolve_schedule_def("nightly_ingest")
    assert defs.resolve_schedule_def("retrain_when_cohort_changed")


def test_occlusion_and_predictions_cover_only_the_patients_they_can_succeed_on() -> None:
    graph = defs.resolve_asset_graph()
    occlusion = graph.get(dg.AssetKey("occlusion_maps")).partitions_def
    predictions = graph.get(dg.AssetKey("patient_predictions")).partitions_def
    assert isinstance(occlusion, dg.DynamicPartitionsDefinition) and occlusion.name == "test_patients"
    assert (
        isinstance(predictions, dg.DynamicPartitionsDefinition) and predictions.name == "unlabelled_patients"
    )
    for key in ("occlusion_maps", "patient_predictions"):
        assert graph.get(dg.AssetKey(key)).automation_condition is not None, key
    assert graph.get(dg.AssetKey("raw_scans")).parent_keys == {dg.AssetKey("landing_scans")}


def test_automation_is_left_out_for_the_daemon_rice_run_starts(monkeypatch) -> None:
    import importlib

    import rice_assets.definitions as module

    monkeypatch.setenv("RICE_AUTOMATION", "off")
    paused = importlib.reload(module).defs
    assert not list(paused.sensors or []) and not list(paused.schedules or [])
    monkeypatch.delenv("RICE_AUTOMATION")
    importlib.reload(module)


def test_dynamic_partitions_are_named_patients() -> None:
    from rice_assets.partitions import patients_partitions

    assert isinstance(patients_partitions, dg.DynamicPartitionsDefinition)
    assert patients_partitions.name == PATIENTS_PARTITION
