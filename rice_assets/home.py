"""Set up RICE_HOME for Dagster: DAGSTER_HOME inside it, with telemetry off and a `gpu` pool."""

import os

from rice_models.paths import RicePaths

DAGSTER_YAML = """\
# Written by rice: Dagster instance settings for this RICE_HOME.
telemetry:
  enabled: false
# Assets that declare a pool (fold_models uses pool `gpu`) run at most `default_limit`
# at a time, so training partitions queue for the one GPU.
concurrency:
  pools:
    default_limit: 1
"""


def prepare_home(paths: RicePaths) -> None:
    """Create RICE_HOME's folders and dagster.yaml, and point DAGSTER_HOME/MLflow at them."""
    for folder in (paths.home, paths.landing, paths.lake, paths.dagster_home, paths.mlartifacts):
        folder.mkdir(parents=True, exist_ok=True)
    dagster_yaml = paths.dagster_home / "dagster.yaml"
    if not dagster_yaml.exists():
        dagster_yaml.write_text(DAGSTER_YAML)
    os.environ["RICE_HOME"] = str(paths.home)
    os.environ["RICE_LANDING"] = str(paths.landing)
    os.environ["DAGSTER_HOME"] = str(paths.dagster_home)
