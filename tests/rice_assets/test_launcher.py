"""`PreloadedRunLauncher` (rice_assets.launcher): each run's worker forked from a warm forkserver."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher.base import LaunchRunContext, WorkerStatus

from rice_assets.alembic_scripts import DAGSTER_STORAGE_MODULES
from rice_assets.home import THREAD_VARIABLES, dagster_yaml
from rice_assets.launcher import PID_TAG, START_TAG, PreloadedRunLauncher
from tests.rice_assets import launcher_jobs


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.DagsterInstance:
    """A persistent instance (its run worker opens it by reference) configured by rice's dagster.yaml."""
    for name in THREAD_VARIABLES:  # the launcher defaults these in the launching process: keep ours
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    (tmp_path / "dagster.yaml").write_text(dagster_yaml(cores=2, gpus=0))
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        yield inst


def _launch(instance: dg.DagsterInstance, job: dg.JobDefinition, run_config: dict | None = None) -> str:
    recon = dg.reconstructable(getattr(launcher_jobs, job.name))
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        job_code_origin=recon.get_python_origin(),
        status=dg.DagsterRunStatus.STARTING,
    )
    instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    return run.run_id


def _wait(instance: dg.DagsterInstance, run_id: str, timeout: float = 120) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while True:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.is_finished:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        time.sleep(0.2)


def _wait_for_status(instance: dg.DagsterInstance, run_id: str, status: dg.DagsterRunStatus) -> None:
    deadline = time.monotonic() + 120
    while instance.get_run_by_id(run_id).status != status:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"run {run_id} never {status}"
        time.sleep(0.2)


def test_rice_dagster_yaml_uses_the_launcher_and_run_monitoring(instance: dg.DagsterInstance) -> None:
    assert isinstance(instance.run_launcher, PreloadedRunLauncher)
    assert instance.run_monitoring_enabled, "a run whose worker died is marked failed"
    assert instance.run_monitoring_max_resume_run_attempts == 0


def test_a_run_executes_in_a_forked_worker_with_the_libraries_loaded_and_its_code_fresh(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    out = tmp_path / "process.json"
    run_id = _launch(
        instance, launcher_jobs.report_job, {"ops": {"report_process": {"config": {"out": str(out)}}}}
    )
    assert _wait(instance, run_id).status == dg.DagsterRunStatus.SUCCESS
    seen = json.loads(out.read_text())
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.tags[PID_TAG] == str(seen["pid"])
    assert seen["parent"] != os.getpid(), "forked by the forkserver, not by the launching process"
    assert seen["torch_loaded"], "torch was imported by the forkserver: the job itself never imports it"
    assert seen["module_imported_in"] == seen["pid"], "the run's code is imported in the run, not preloaded"
    assert seen["alembic_script_directories"] == len(DAGSTER_STORAGE_MODULES), (
        "the forkserver read Dagster's migration scripts for every storage the run opened"
    )


def test_the_forkserver_gets_the_threads_per_run_before_it_loads_the_libraries(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the forkserver inherits (it starts from the launching process's environment): cores ÷
    max_concurrent_runs threads (2 cores, 2 runs: 1), unless the environment sets them already."""
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    launcher = PreloadedRunLauncher()
    launcher.register_instance(instance)
    launcher._forkserver()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"
    assert os.environ["MKL_NUM_THREADS"] == "3", "a variable already set is kept"


def test_terminate_interrupts_the_run_and_marks_it_canceled(instance: dg.DagsterInstance) -> None:
    run_id = _launch(instance, launcher_jobs.wait_job)
    _wait_for_status(instance, run_id, dg.DagsterRunStatus.STARTED)
    assert (
        instance.run_launcher.check_run_worker_health(instance.get_run_by_id(run_id)).status
        == WorkerStatus.RUNNING
    )
    # from another launcher object, as the UI's webserver or another daemon thread terminates it
    other = PreloadedRunLauncher()
    other.register_instance(instance)
    assert other.terminate(run_id)
    assert _wait(instance, run_id, timeout=60).status == dg.DagsterRunStatus.CANCELED
    assert not other.terminate(run_id), "a finished run is not terminated again"


def test_a_killed_worker_is_reported_failed_to_run_monitoring(instance: dg.DagsterInstance) -> None:
    run_id = _launch(instance, launcher_jobs.wait_job)
    _wait_for_status(instance, run_id, dg.DagsterRunStatus.STARTED)
    run = instance.get_run_by_id(run_id)
    assert run is not None
    os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (health := instance.run_launcher.check_run_worker_health(run)).status == WorkerStatus.RUNNING:
        assert time.monotonic() < deadline, "the killed worker still looks alive"
        time.sleep(0.2)
    assert health.status == WorkerStatus.FAILED and run.tags[PID_TAG] in (health.msg or "")


def test_a_run_not_started_by_the_launcher_is_not_judged(instance: dg.DagsterInstance) -> None:
    """`dagster asset materialize` executes in its own process and records no worker: run monitoring
    must not fail it."""
    run = instance.create_run_for_job(job_def=launcher_jobs.wait_job, status=dg.DagsterRunStatus.STARTED)
    assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_a_process_that_reuses_the_workers_id_is_not_taken_for_it(instance: dg.DagsterInstance) -> None:
    """After a restart, a run left STARTED may name a pid that another process now has: that process is
    neither reported as the worker nor sent the interrupt."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        tags = {PID_TAG: str(other.pid), START_TAG: "1"}  # not `sleep`'s start time
        run = instance.create_run_for_job(
            job_def=launcher_jobs.wait_job, status=dg.DagsterRunStatus.STARTED, tags=tags
        )
        assert instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED
        assert not instance.run_launcher.terminate(run.run_id)
        assert other.poll() is None, "the other process was not signalled"
    finally:
        other.kill()
        other.wait()
