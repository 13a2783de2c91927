"""`PreloadedRunLauncher`: Dagster's run worker, forked from a process that imported the libraries once.

Dagster's `DefaultRunLauncher` asks the code server to start each run, and the code server spawns a
new interpreter for it (`multiprocessing` "spawn", `dagster._grpc.server.StartRun`). That interpreter
imports Dagster and loads the definitions (~2 s before the first step starts), then the step imports
what it needs: ANTs (1.5 s) or torch, MONAI and MLflow (~5 s). The demo makes 132 runs of 5-15 s of
work each, so about 40 % of their time went into starting.

This launcher runs the same run worker that Dagster's container launchers run (`dagster api
execute_run` with an `ExecuteRunArgs`), in a process forked from a `multiprocessing` forkserver that
imported `preload_modules` once, when the first run is launched. Only third-party libraries are
preloaded: each run imports rice's code (the definitions the run's origin names) afresh, so an edit
shows in the next run, as with the code server.

Like the code server's runs, a run's process inherits the environment of the process that launches
it (the daemon), with `rice_assets.home.THREAD_VARIABLES` defaulted to `threads_per_run` before the
libraries load. Termination (the UI, a cancelled backfill) sends the run's process SIGINT, Dagster's
interrupt, as the code server does; run monitoring (`check_run_worker_health`) asks whether the
process recorded on the run (tag `rice/run_worker_pid`) is alive, from any process on the machine.
"""

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import dagster._check as check
from dagster import Array, Field
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

PRELOAD_MODULES: tuple[str, ...] = (
    "dagster._cli.api",
    "dagster._daemon.cli",
    "torch",
    "monai",
    "mlflow",
    "ants",
    "sklearn.model_selection",
    "scipy.stats",
)
"""What a rice run imports besides rice itself (~8 s on 2 cores, once per daemon): Dagster's run worker,
the training stack and ANTs; and the daemon's CLI, because a forked process first imports the main module
of the process that launched it (`multiprocessing`'s preparation; 0.27 s a run otherwise). A module that
is not installed is skipped."""

PID_TAG = "rice/run_worker_pid"
"""Run tag: the process id of the run's worker (for termination and run monitoring)."""


class PreloadedRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as `dagster api execute_run` in a process forked from a warm forkserver.

    Config (dagster.yaml, `run_launcher.config`): `preload_modules`, the modules the forkserver
    imports (default `PRELOAD_MODULES`).
    """

    def __init__(
        self, inst_data: ConfigurableClassData | None = None, preload_modules: Sequence[str] = PRELOAD_MODULES
    ):
        self._inst_data = inst_data
        self._preload_modules = list(preload_modules)
        self._context: ForkServerContext | None = None
        self._processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return {
            "preload_modules": Field(
                Array(str),
                is_required=False,
                default_value=list(PRELOAD_MODULES),
                description="Modules the forkserver imports once; every run's process is forked from it.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> "PreloadedRunLauncher":
        return cls(inst_data=inst_data, preload_modules=config_value.get("preload_modules", PRELOAD_MODULES))

    def _forkserver(self) -> ForkServerContext:
        """The forkserver context, its thread variables set before it starts and loads the libraries."""
        if self._context is None:
            from rice_assets.home import thread_environment

            os.environ.update(thread_environment(Path(self._instance.root_directory)))
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(self._preload_modules)
            self._context = context
        return self._context

    def start_forkserver(self) -> None:
        """Start the forkserver now (it imports `preload_modules` in the background), so that its imports
        overlap the daemon's start-up instead of delaying the first run (`rice_assets.daemon`)."""
        self._forkserver()
        forkserver.ensure_running()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = check.not_none(context.job_code_origin, f"run {run.run_id} has no code origin")
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        with self._lock:
            process = self._forkserver().Process(
                target=execute_run, args=(serialize_value(args),), name=f"dagster-run-{run.run_id}"
            )
            process.start()
            self._processes = {run_id: p for run_id, p in self._processes.items() if p.is_alive()} | {
                run.run_id: process
            }
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(process.pid)})

    def terminate(self, run_id: str) -> bool:
        """SIGINT the run's process (Dagster then stops the step and marks the run canceled); False when
        the run is finished or its process is gone."""
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = _worker_pid(run)
        if pid is None:
            self._instance.report_engine_event(
                f"No run worker process is recorded for this run (tag {PID_TAG}): nothing to terminate.",
                dagster_run=run,
                cls=self.__class__,
            )
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
            return True
        return False

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = _worker_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "no run worker process recorded")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker process (pid {pid}) ended before the run did",
            run_worker_id=str(pid),
        )

    def join(self, timeout: int = 30) -> None:
        """Wait for the runs this launcher started (tests, `DagsterInstance.dispose`)."""
        for process in list(self._processes.values()):
            process.join(timeout)


def execute_run(serialized_args: str) -> None:
    """The run worker, in the forked process: `dagster api execute_run <ExecuteRunArgs>`.

    The preloaded libraries' objects are frozen out of garbage collection first (`rice_models.process`).
    """
    from dagster._cli.api import execute_run_command

    from rice_models.process import freeze_imported_objects

    freeze_imported_objects()
    execute_run_command.main(args=[serialized_args], prog_name="dagster api execute_run")


def _worker_pid(run: DagsterRun) -> int | None:
    value = run.tags.get(PID_TAG)
    return int(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
