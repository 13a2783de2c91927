"""`PreloadedRunLauncher`: Dagster's run worker, forked from a process that imported the libraries once.

Dagster's `DefaultRunLauncher` asks the code server to start each run, and the code server spawns a
new interpreter for it (`multiprocessing` "spawn", `dagster._grpc.server.StartRun`). That interpreter
imports Dagster and loads the definitions (~2 s before the first step starts), then the step imports
what it needs: ANTs (1.5 s) or torch, MONAI and MLflow (~5 s). The demo makes 132 runs of 5-15 s of
work each, so about 40 % of their time went into starting.

This launcher runs the same run worker that Dagster's container launchers run (`dagster api
execute_run` with an `ExecuteRunArgs`), in a process forked from a `multiprocessing` forkserver that
imported `preload_modules` once (`start_forkserver`: `rice run`'s daemon calls it at start-up;
otherwise the first launch starts it). Only third-party libraries are preloaded, and
`rice_assets.alembic_scripts`, which reads Dagster's schema-migration scripts once for all the workers: each
run imports rice's code (the definitions the run's origin names) afresh, so an edit shows in the next run,
as with the code server; an upgraded library shows once the daemon restarts.

A run's process has the environment the launching process (the daemon) had when the forkserver
started, with `rice_assets.home.THREAD_VARIABLES` defaulted to `threads_per_run` before the libraries
load, and runs on the daemon's Python (the code location's `executable_path` is not used).

The run's worker records itself on the run (tags `rice/run_worker_pid` and `rice/run_worker_start`, its
start time in clock ticks from /proc) before Dagster marks the run started, so that termination (the
UI, a cancelled backfill: SIGINT, Dagster's interrupt, as the code server sends it) and run monitoring
(`check_run_worker_health`) find that process, and not another that reuses its id, from any process of
the same machine. A run without these tags (`dagster asset materialize` executes in its own process)
is reported running: it is not this launcher's to judge. A child that fails before Dagster takes over
(its traceback is in the daemon's log) leaves the run STARTING until run monitoring's start timeout
(180 s) fails it.
"""

import atexit
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
from dagster import Array, DagsterInstance, Field
from dagster._core.launcher.base import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, deserialize_value, serialize_value

from rice_assets.home import thread_environment
from rice_models.process import freeze_imported_objects, process_alive

PRELOAD_MODULES: tuple[str, ...] = (
    "dagster._cli.api",
    "dagster._daemon.cli",
    "torch",
    "monai",
    "mlflow",
    "ants",
    "sklearn.model_selection",
    "scipy.stats",
    "duckdb",
    "importlib_metadata",
    "rice_assets.alembic_scripts",
)
"""What a rice run imports besides rice itself (~8 s on 2 cores, once per daemon): Dagster's run worker,
the training stack and ANTs; and the daemon's CLI, because a forked process first imports the main module
of the process that launched it (`multiprocessing`'s preparation; 0.27 s a run otherwise). DuckDB (the
catalog) and `importlib_metadata` (read while the definitions load) are the rest of what loading rice's
definitions imported afresh in every run (0.31 s alone, 0.18 s with them preloaded; in the demo's runs
the worker's start to `RUN_START` went from 0.24-0.25 s to 0.22 s). `rice_assets.alembic_scripts` reads
Dagster's schema-migration scripts once here, instead of ~5 times in every run (a trivial run took ~0.1 s
less). A module that is not installed is skipped."""

PID_TAG = "rice/run_worker_pid"
"""Run tag: the process id of the run's worker (for termination and run monitoring)."""
START_TAG = "rice/run_worker_start"
"""Run tag: the worker's start time (field 22 of /proc/<pid>/stat, clock ticks since boot), so that a
later process with the same id is not taken for it; empty where /proc is missing."""


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

    def terminate(self, run_id: str) -> bool:
        """SIGINT the run's process (Dagster then stops the step and marks the run canceled); False when
        the run is finished or its process is gone."""
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = _worker_pid(run)
        if pid is None or not _is_worker(run, pid):
            self._instance.report_engine_event(
                f"No live run worker is recorded for this run (tag {PID_TAG}): nothing to terminate.",
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
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not started by this launcher: not checked")
        if _is_worker(run, pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        message = f"the run worker process (pid {pid}) ended before the run did"
        return CheckRunHealthResult(WorkerStatus.FAILED, message, run_worker_id=str(pid))

    def join(self, timeout: int = 30) -> None:
        """Wait for the runs this launcher started (`dagster.instance_for_test` calls it)."""
        for process in list(self._processes.values()):
            process.join(timeout)


def execute_run(serialized_args: str) -> None:
    """The run worker, in the forked process: records itself on the run, then runs `dagster api
    execute_run <ExecuteRunArgs>`.

    The preloaded libraries' objects are frozen out of garbage collection first (`rice_models.process`).
    A forkserver's child ends with `os._exit`; the exit handlers a normal interpreter runs (logging's
    flush, MLflow's) are run here instead.
    """
    from dagster._cli.api import execute_run_command

    freeze_imported_objects()
    args = deserialize_value(serialized_args, ExecuteRunArgs)
    pid = os.getpid()
    try:
        with DagsterInstance.from_ref(check.not_none(args.instance_ref)) as instance:
            instance.add_run_tags(args.run_id, {PID_TAG: str(pid), START_TAG: _start_time(pid) or ""})
        execute_run_command.main(args=[serialized_args], prog_name="dagster api execute_run")
    finally:
        atexit._run_exitfuncs()


def _worker_pid(run: DagsterRun) -> int | None:
    value = run.tags.get(PID_TAG)
    return int(value) if value else None


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (proc(5)): the process's start, in clock ticks after boot; None
    where there is no such process, it has exited (a zombie not yet reaped) or there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # fields 3 (state) onwards: "(comm)" may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def _is_worker(run: DagsterRun, pid: int) -> bool:
    """Whether process `pid` is alive and is the one that recorded itself on `run`."""
    recorded = run.tags.get(START_TAG)
    return _start_time(pid) == recorded if recorded else process_alive(pid)
