"""The one Dagster `Definitions` of the rice pipeline (loaded by workspace.yaml, `rice dev`, the daemon).

With `RICE_AUTOMATION=off` (what `rice run` sets for the daemon it starts) the sensors and schedules are
left out: `rice run` drives the pipeline itself and nothing else should start runs meanwhile.
"""

import os

import dagster as dg

from rice_assets import checks
from rice_assets.assets import cohort, evaluation, inference, landing, preprocessing, training
from rice_assets.assets.evaluation import champion_model, evaluation_tables
from rice_assets.executors import executor_from_env
from rice_assets.resources import rice_resources
from rice_assets.schedules import ingest_job, nightly_ingest, retrain_experiment, retrain_when_cohort_changed
from rice_assets.sensors import landing_zone_sensor, rice_automation
from rice_assets.stages import STAGES
from rice_models.paths import RicePaths
from rice_models.process import freeze_imported_objects

ALL_ASSETS = dg.load_assets_from_modules([landing, cohort, preprocessing, training, evaluation, inference])
ALL_CHECKS = dg.load_asset_checks_from_modules([checks])

evaluate_job = dg.define_asset_job(
    "evaluate_experiment",
    selection=dg.AssetSelection.assets(evaluation_tables, champion_model)
    | dg.AssetSelection.checks(checks.experiment_is_complete),
    description="Evaluate the current experiment and register its champion, after the blocking check "
    "experiment_is_complete (every cell of every compared combination current).",
)


def automation_enabled() -> bool:
    """False when `RICE_AUTOMATION` is `off` (or 0/false/no)."""
    return os.environ.get("RICE_AUTOMATION", "on").strip().lower() not in ("off", "0", "false", "no")


defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[ingest_job, evaluate_job, retrain_experiment, *(stage.job for stage in STAGES)],
    schedules=[nightly_ingest, retrain_when_cohort_changed] if automation_enabled() else [],
    sensors=[landing_zone_sensor, rice_automation] if automation_enabled() else [],
    resources=rice_resources(RicePaths.from_env()),
    # $RICE_EXECUTOR names a YAML file choosing the executor (rice_assets.executors: multiprocess,
    # Celery, Kubernetes). Unset: one process per run, because a step subprocess would import torch,
    # MONAI and MLflow a second time per partition; partitions run in parallel as runs (the run
    # queue's max_concurrent_runs)
    executor=executor_from_env() or dg.in_process_executor,
)

# Every run process starts by loading these definitions (Dagster and rice: about 150,000 objects): keep the
# garbage collector from walking them again in each collection and at exit (rice_models.process).
freeze_imported_objects()
