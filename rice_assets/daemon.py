"""`python -m rice_assets.daemon run -m rice_assets.definitions`: dagster-daemon, shorter backfill loop.

Dagster's backfill daemon looks at its backfills every 30 s (`DEFAULT_DAEMON_INTERVAL_SECONDS`, not
configurable in dagster.yaml); each stage group of `rice run` and each layer of a backfill (cells, then
evaluation, then occlusion maps) waits for that loop, minutes in all. This entry point is the same
`dagster-daemon` CLI with the loop at `RICE_BACKFILL_INTERVAL_SECONDS` (default 2: `rice run` of the
13-patient cohort of the browser tests, then, took 154 s with 5, 144 s with 2). Nothing else changes:
the other daemons keep their own intervals. When the instance's run launcher is rice's
(`rice_assets.launcher.PreloadedRunLauncher`), its forkserver is started first, so that its imports overlap
the daemon's start-up. `rice run` starts it (`rice dev` runs Dagster's own `dagster dev`, whose daemon
starts the forkserver at its first run).
"""

import os
import sys

from dagster._daemon import controller

BACKFILL_INTERVAL_SECONDS = 2


def main() -> None:
    """Run `dagster-daemon` with `sys.argv[1:]` after shortening the backfill loop (and starting the
    forkserver of rice's run launcher, when the instance uses it)."""
    _start_run_launcher()
    interval = int(os.environ.get("RICE_BACKFILL_INTERVAL_SECONDS", BACKFILL_INTERVAL_SECONDS))
    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = interval  # read by the backfill loop at each start
    from dagster._daemon.cli import main as dagster_daemon_main

    sys.argv[0] = "dagster-daemon"
    dagster_daemon_main()


def _start_run_launcher() -> None:
    """Start `PreloadedRunLauncher`'s forkserver (~8 s of imports) while the daemon starts its code server,
    instead of when the first run is launched."""
    from dagster import DagsterInstance

    from rice_assets.launcher import PreloadedRunLauncher

    with DagsterInstance.get() as instance:
        if isinstance(instance.run_launcher, PreloadedRunLauncher):
            instance.run_launcher.start_forkserver()


if __name__ == "__main__":
    main()
