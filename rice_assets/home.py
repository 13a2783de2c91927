"""Set up RICE_HOME for Dagster: DAGSTER_HOME inside it, with telemetry off, a run queue sized to the
machine, a `gpu` pool sized to its GPUs, and the threads each run's process may use."""

import os
from pathlib import Path

import dagster as dg
import yaml

from rice_models.paths import RicePaths

HEADER = "# Written by rice: Dagster instance settings for this RICE_HOME."
DAGSTER_YAML = """\
{header}
# Edit freely: rice only rewrites this file while it still starts with the line above.
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    # How often the queue looks for a free slot (Dagster's default: 5 s, during which the slot a run
    # just left stays idle; the demo's 132 short runs lost minutes to it).
    dequeue_interval_seconds: 1
run_launcher:
  # Each run's process is forked from one that imported Dagster, torch, MONAI, MLflow and ANTs once
  # (rice_assets.launcher). Dagster's default launcher starts a new interpreter per run instead: the
  # demo's 132 short runs then spend ~40 % of their time importing. Delete these lines to use it.
  module: rice_assets.launcher
  class: PreloadedRunLauncher
run_monitoring:
  # A run whose process died (killed, out of memory) is marked failed, not left "Started".
  enabled: true
  poll_interval_seconds: 10
  max_resume_run_attempts: 0
concurrency:
  # Runs (one per partition of a backfill) executing at once; the rest wait in the run queue
  # (Runs page, "Queued"). Default: the machine's cores.
  runs:
    max_concurrent_runs: {runs}
  # Assets that declare a pool (fold_models uses pool `gpu`) run at most `default_limit` at a time:
  # one per GPU; on a machine without one, as many as the runs above (each run's process then uses
  # cores / max_concurrent_runs threads: rice_assets.home.thread_environment). `granularity: run`
  # keeps such runs queued, not started.
  pools:
    default_limit: {gpus}
    granularity: run
"""


def dagster_yaml(cores: int | None = None, gpus: int | None = None) -> str:
    """The instance settings rice writes: `cores` concurrent runs; `gpus` slots in pool `gpu`, or as many
    slots as runs when there is no GPU (training then runs on the CPU, like every other run)."""
    if gpus is None:
        gpus = _gpu_count()
    runs = max(1, cores or os.cpu_count() or 1)
    return DAGSTER_YAML.format(header=HEADER, runs=runs, gpus=gpus if gpus > 0 else runs)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
"""The thread counts torch (OpenMP, MKL) and ITK/ANTs read when they load."""


def threads_per_run(dagster_home: Path, cores: int | None = None) -> int:
    """Threads for one run's process: the cores divided among the runs that may execute at once
    (`concurrency.runs.max_concurrent_runs` of `dagster_home/dagster.yaml`; the cores when it is unset).

    Two runs of two threads each on two cores oversubscribe them (OpenMP threads spin while they wait):
    one thread each keeps both cores busy without that.
    """
    cores = max(1, cores or os.cpu_count() or 1)
    path = dagster_home / "dagster.yaml"
    config = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    runs = ((config.get("concurrency") or {}).get("runs") or {}).get("max_concurrent_runs") or cores
    return max(1, cores // max(1, int(runs)))


def thread_environment(dagster_home: Path) -> dict[str, str]:
    """`THREAD_VARIABLES` at `threads_per_run`, for the environment of a daemon or webserver that launches
    runs (their run processes inherit it); a variable the environment sets already is left out."""
    threads = str(threads_per_run(dagster_home))
    return {name: threads for name in THREAD_VARIABLES if name not in os.environ}


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def prepare_home(paths: RicePaths) -> None:
    """Create RICE_HOME's folders, dagster.yaml and the instance's storage; point DAGSTER_HOME/MLflow at them.

    A dagster.yaml rice wrote (its first line says so) is brought up to date; one a user wrote is kept.
    """
    for folder in (paths.home, paths.landing, paths.lake, paths.dagster_home, paths.mlartifacts):
        folder.mkdir(parents=True, exist_ok=True)
    path = paths.dagster_home / "dagster.yaml"
    if not path.exists() or path.read_text().startswith(HEADER):
        text = dagster_yaml()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    os.environ["RICE_HOME"] = str(paths.home)
    os.environ["RICE_LANDING"] = str(paths.landing)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
    initialise_instance_storage(paths)


def initialise_instance_storage(paths: RicePaths) -> None:
    """Open the Dagster instance once, so its storage exists before several processes open it.

    A fresh SQLite instance creates and stamps its schema when first opened; the daemon, the webserver
    and Celery workers opening a fresh one at the same moment race on that stamp and one of them fails
    with alembic's "Version table 'alembic_version' has more than one head present". Opening it here,
    before any of them starts, makes their opens read-only checks (~1.4 s on a fresh home, 0.04 s after).
    """
    with dg.DagsterInstance.from_config(str(paths.dagster_home)):
        pass
