"""Dagster's own time in one run under rice's run launcher, with and without the shared migration scripts.

    .venv/bin/python benchmarks/run_start.py [--runs 12]

Launches a trivial job (one op that returns at once, in-process executor) `--runs` times, one after the
other, through `rice_assets.launcher.PreloadedRunLauncher` on a fresh SQLite instance, in two child
processes: one whose forkserver preloads only Dagster's run worker, one that also preloads
`rice_assets.alembic_scripts` (Dagster's schema-migration scripts read once). Prints, for each, the
medians (first two runs left out) of: launch -> the worker's first event -> `RUN_START` -> the run's
last event, and the whole launch -> finished. With nothing in the step, this is Dagster's per-run
bookkeeping: the instance opened twice, the run's databases initialised, ~13 events recorded.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import dagster as dg

BASE_PRELOAD = ("dagster._cli.api", "dagster._daemon.cli")
SCRIPTS = "rice_assets.alembic_scripts"


@dg.op
def nothing() -> None:
    """The step: no work, so that what is timed is Dagster's."""


@dg.job(executor_def=dg.in_process_executor)
def trivial_job() -> None:
    nothing()


def measure(runs: int, preload: list[str]) -> list[tuple[float, float, float, float]]:
    """(to first event, to RUN_START, to last event, launch to finished) seconds of each run."""
    from dagster._core.launcher.base import LaunchRunContext

    home = tempfile.mkdtemp(prefix="rice-run-start-")
    modules = ", ".join(preload)
    launcher = "run_launcher:\n  module: rice_assets.launcher\n  class: PreloadedRunLauncher\n"
    config = f"{launcher}  config:\n    preload_modules: [{modules}]\ntelemetry:\n  enabled: false\n"
    with open(os.path.join(home, "dagster.yaml"), "w") as f:
        f.write(config)
    origin = dg.reconstructable(trivial_job).get_python_origin()
    out = []
    with dg.DagsterInstance.from_config(home) as instance:
        instance.run_launcher.start_forkserver()  # type: ignore[attr-defined]
        time.sleep(3)  # its imports, as at the daemon's start
        for _ in range(runs):
            run = instance.create_run_for_job(
                job_def=trivial_job, job_code_origin=origin, status=dg.DagsterRunStatus.STARTING
            )
            launched = time.time()
            instance.run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
            while not instance.get_run_by_id(run.run_id).is_finished:  # type: ignore[union-attr]
                time.sleep(0.01)
            finished = time.time()
            events = [
                (e.dagster_event.event_type, e.timestamp)
                for e in instance.all_logs(run.run_id)
                if e.dagster_event
            ]
            started = next(stamp for kind, stamp in events if kind == dg.DagsterEventType.RUN_START)
            first, last = events[0][1], events[-1][1]
            out.append((first - launched, started - first, last - started, finished - launched))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--preload", nargs="*", default=None, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    if args.preload is not None:
        times = measure(args.runs, args.preload)[2:]
        medians = [statistics.median(t[i] for t in times) for i in range(4)]
        print(" / ".join(f"{m:.3f}" for m in medians[:3]) + f" s; launch to finished {medians[3]:.3f} s")
        return
    print("medians: launch -> first event / -> RUN_START / -> last event")
    variants = (("Dagster only", BASE_PRELOAD), ("with the shared scripts", (*BASE_PRELOAD, SCRIPTS)))
    for label, preload in variants:
        command = [sys.executable, __file__, "--runs", str(args.runs), "--preload", *preload]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(f"{label:<24} {result.stdout.strip()}")


if __name__ == "__main__":
    main()
