"""Scale-out by configuration: the executor YAML (`$RICE_EXECUTOR`), Celery workers on a real Redis, and a
Dagster instance on a real PostgreSQL."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import torch
import yaml

from data_catalog import Catalog
from rice_assets.executors import EXECUTOR_ENV, ExecutorConfigError, load_executor
from rice_assets.home import prepare_home
from rice_models.paths import RicePaths
from rice_models.synth import generate_cohort
from rice_models.tracking import default_tracking, load_model
from tests.rice_assets.servers import postgres_server, redis_server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CELLS = ("dose|0", "postop+dose|1")
TRAIN = {"config": {"epochs": 2, "augment": False}}
WORKERS = ("w1", "w2")


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_executor_yaml_selects_and_validates(tmp_path: Path) -> None:
    celery = write_yaml(
        tmp_path / "celery.yaml",
        "executor: celery\nexecution:\n  config:\n    broker: redis://h:6379/0\n    backend: redis://h:6379/1\n",
    )
    assert load_executor(celery).name == "celery"
    assert load_executor(write_yaml(tmp_path / "m.yaml", "executor: multiprocess\n")).name == "multiprocess"
    k8s = load_executor(REPO / "deploy" / "executor-k8s.yaml")
    assert k8s.name == "k8s"
    for text, message in [
        ("executor: dask\n", "executor 'dask' must be one of"),
        ("executor: celery\nexecution:\n  config:\n    brokr: x\n", 'unexpected config entry "brokr"'),
        ("executor: k8s\nexecution:\n  config:\n    max_concurrent: many\n", "max_concurrent"),
    ]:
        with pytest.raises(ExecutorConfigError, match=message):
            load_executor(write_yaml(tmp_path / "bad.yaml", text))


def test_definitions_take_the_executor_from_the_environment(tmp_path: Path) -> None:
    """The one Definitions, loaded in a fresh process as `dagster` loads it, uses the YAML's executor."""
    config = write_yaml(tmp_path / "celery.yaml", "executor: celery\n")
    code = (
        "from rice_assets.definitions import defs; "
        "print(defs.resolve_job_def('training_stage').executor_def.name)"
    )
    env = {**os.environ, EXECUTOR_ENV: str(config), "RICE_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "celery", out.stderr[-2000:]


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _plans(patients: list[str]) -> dict[str, list[dict]]:
    """Two RICE_HOMEs per executor: the preprocessing of real synthetic patients, and training on a fake
    registered cohort (14 patients, as tests/rice_assets/test_training.py builds it)."""
    preprocessing = [{"job": "cohort_stage", "run_config": QUIET}]
    preprocessing += [{"job": "preprocessing_stage", "partition": p, "run_config": QUIET} for p in patients]
    training: list[dict] = [
        {"fake_cohort": 14},
        {"job": "cv_splits_stage", "run_config": {**QUIET, "ops": {"cv_splits": TRAIN}}},
    ]
    cell_config = {**QUIET, "ops": {"fold_models": TRAIN}}
    training += [{"job": "training_stage", "partition": cell, "run_config": cell_config} for cell in CELLS]
    return {"preprocessing": preprocessing, "training": training}


def _env(paths: RicePaths, executor_yaml: Path) -> dict[str, str]:
    prepare_home(paths)  # sets RICE_HOME, RICE_LANDING, DAGSTER_HOME in os.environ
    return {
        **os.environ,
        "RICE_HOME": str(paths.home),
        "RICE_LANDING": str(paths.landing),
        "DAGSTER_HOME": str(paths.dagster_home),
        EXECUTOR_ENV: str(executor_yaml),
        "PYTHONPATH": str(REPO),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery`
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",  # bit-identical registration in every process
        "MLFLOW_TRACKING_URI": "",
    }


def _drive(env: dict[str, str], plan: list[dict]) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.rice_assets.scaleout_driver", json.dumps(plan)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # a worker that died would leave the run waiting on its task
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def celery_workers(env: dict[str, str], config: Path, logs: Path) -> Iterator[None]:
    """Two `dagster-celery` workers (solo pool: one step at a time each), in their own process groups."""
    processes = []
    logs.mkdir(parents=True, exist_ok=True)
    for name in WORKERS:
        args = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config)]
        args += ["-n", name, "--loglevel", "WARNING", "--", "--pool=solo"]
        with (logs / f"{name}.log").open("w") as log:
            processes.append(
                subprocess.Popen(
                    args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _without_run_facts(value: Any) -> Any:
    """`value` without what differs from run to run: MLflow run ids and wall-clock seconds."""
    if isinstance(value, dict):
        return {
            k: _without_run_facts(v) for k, v in value.items() if k != "mlflow_run_id" and "seconds" not in k
        }
    if isinstance(value, list):
        return [_without_run_facts(v) for v in value]
    return value


def _catalog_view(paths: RicePaths) -> dict[str, list]:
    """What must not depend on the executor: every artifact's checksum (fold models: their metadata without
    run ids), lineage, scans and models rows without run ids or times."""
    catalog = Catalog(paths.catalog)
    artifacts = catalog.query(
        "SELECT artifact_id, sha256, profile, metadata FROM artifacts ORDER BY artifact_id"
    )
    for row in artifacts:
        if row["artifact_id"].startswith("fold_models"):  # model.json names the MLflow run: compare the rest
            row["sha256"] = None
            row["metadata"] = _without_run_facts(row["metadata"])
        else:
            row["metadata"] = None
    return {
        "artifacts": artifacts,
        "lineage": catalog.query("SELECT child_id, parent_kind, parent_id FROM lineage ORDER BY ALL"),
        "scans": catalog.query("SELECT patient_id, channel, sha256 FROM scans ORDER BY ALL"),
        "models": catalog.query(
            "SELECT model_id, combination, fold, registered_name, model_version, profile "
            "FROM models ORDER BY ALL"
        ),
        "splits": catalog.query("SELECT * EXCLUDE (created) FROM splits ORDER BY ALL"),
    }


def _weights(paths: RicePaths) -> dict[str, dict[str, torch.Tensor]]:
    tracking = default_tracking(paths)
    rows = Catalog(paths.catalog).query("SELECT model_id, registered_name, model_version FROM models")
    return {
        row["model_id"]: load_model(
            f"models:/{row['registered_name']}/{row['model_version']}", tracking=tracking
        ).state_dict()
        for row in rows
    }


def _celery_workers_of(paths: RicePaths, run_ids: list[str]) -> dict[str, set[str]]:
    """For each step key run, the Celery workers that reported executing it (from the run's event log)."""
    seen: dict[str, set[str]] = {}
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        for run_id in run_ids:
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event is None or not event.is_engine_event:
                    continue
                worker = event.engine_event_data.metadata.get("Celery worker")
                if worker is not None:
                    seen.setdefault(f"{run_id}:{record.step_key}", set()).add(str(worker.value))
    return seen


def test_celery_workers_give_the_same_artifacts_and_catalog_as_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("RICE_HOME", "RICE_LANDING", "DAGSTER_HOME"):  # prepare_home sets them: restored after
        monkeypatch.setenv(key, os.environ.get(key, ""))
    landing = tmp_path / "landing"
    cohort = generate_cohort(landing, n_patients=2, seed=5, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    plans = _plans([p.patient_id for p in cohort.patients])
    in_process = write_yaml(tmp_path / "in_process.yaml", "executor: in_process\n")
    reference = {phase: RicePaths(home=tmp_path / "in_process" / phase, landing=landing) for phase in plans}
    for phase, plan in plans.items():
        _drive(_env(reference[phase], in_process), plan)

    celery = {phase: RicePaths(home=tmp_path / "celery" / phase, landing=landing) for phase in plans}
    steps: dict[str, set[str]] = {}
    with redis_server(tmp_path / "redis") as redis:
        config = write_yaml(
            tmp_path / "celery.yaml",
            f"executor: celery\nexecution:\n  config:\n    broker: {redis}/0\n    backend: {redis}/1\n",
        )
        for phase, plan in plans.items():  # workers load the definitions, hence RICE_HOME, once
            env = _env(celery[phase], config)
            with celery_workers(env, config, tmp_path / phase):
                runs = _drive(env, plan)
            steps.update(_celery_workers_of(celery[phase], [run["run_id"] for run in runs]))

    assert len(steps) >= 1 + 3 * len(cohort.patients) + 1 + len(CELLS), steps
    workers = set().union(*steps.values())
    assert workers and all(w.split("@")[0] in WORKERS for w in workers), workers
    for phase in plans:
        expected, got = _catalog_view(reference[phase]), _catalog_view(celery[phase])
        assert got["artifacts"] and got == expected, phase
    prep, ref_prep = celery["preprocessing"], reference["preprocessing"]
    assert len(_catalog_view(prep)["scans"]) == 3 * len(cohort.patients)
    files = sorted(p.relative_to(ref_prep.lake) for p in ref_prep.lake.rglob("*.nii.gz"))
    assert len(files) >= 6 * len(cohort.patients)
    assert files == sorted(p.relative_to(prep.lake) for p in prep.lake.rglob("*.nii.gz"))
    assert len(_catalog_view(celery["training"])["models"]) == len(CELLS)
    reference_weights, celery_weights = _weights(reference["training"]), _weights(celery["training"])
    assert reference_weights.keys() == celery_weights.keys()
    for model_id, state in reference_weights.items():
        assert all(torch.equal(state[k], celery_weights[model_id][k]) for k in state), model_id


def test_dagster_instance_on_postgres_records_a_materialisation(tmp_path: Path) -> None:
    """dagster-postgres storage (runs, events, schedules) on a real PostgreSQL: materialise one patient's
    raw_scans through that instance and read its event log back from a second instance object."""
    from rice_assets.resources import rice_resources
    from tests.rice_assets.helpers import materialize

    landing = tmp_path / "landing"
    cohort = generate_cohort(landing, n_patients=1, seed=6, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    pid = cohort.patients[0].patient_id
    paths = RicePaths(home=tmp_path / "home", landing=landing)
    with postgres_server() as db:
        (tmp_path / "dagster").mkdir()
        # the storage section of deploy/dagster-instance.yaml, pointed at the test's server
        storage = {"postgres": {"postgres_db": {**db, "scheme": "postgresql+psycopg2"}}}
        (tmp_path / "dagster" / "dagster.yaml").write_text(
            yaml.safe_dump({"storage": storage, "telemetry": {"enabled": False}})
        )
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            resources = rice_resources(paths)
            materialize(["cohort_manifest"], resources, instance)
            result = materialize(["raw_scans"], resources, instance, pid)
            assert result.success
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as again:
            record = again.get_latest_materialization_event(dg.AssetKey("raw_scans"))
            assert record is not None and record.run_id == result.run_id
            assert record.asset_materialization is not None and record.asset_materialization.partition == pid
            assert again.get_run_by_id(result.run_id).is_success  # type: ignore[union-attr]
            assert pid in again.get_dynamic_partitions("patients")
