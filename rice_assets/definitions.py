"""The one Dagster `Definitions` of the rice pipeline (loaded by workspace.yaml)."""

import dagster as dg

from rice_assets import checks
from rice_assets.assets import cohort, evaluation, inference, preprocessing, training
from rice_assets.assets.evaluation import champion_model, evaluation_tables
from rice_assets.executors import executor_from_env
from rice_assets.resources import rice_resources
from rice_assets.schedules import ingest_job, nightly_ingest
from rice_assets.sensors import new_patients_sensor
from rice_assets.stages import STAGES
from rice_models.paths import RicePaths

ALL_ASSETS = dg.load_assets_from_modules([cohort, preprocessing, training, evaluation, inference])
ALL_CHECKS = dg.load_asset_checks_from_modules([checks])

evaluate_job = dg.define_asset_job(
    "evaluate_experiment",
    selection=dg.AssetSelection.assets(evaluation_tables, champion_model)
    | dg.AssetSelection.checks(checks.experiment_is_complete),
    description="Evaluate the current experiment and register its champion, after the blocking check "
    "experiment_is_complete (every cell of every compared combination current).",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[ingest_job, evaluate_job, *(stage.job for stage in STAGES)],
    schedules=[nightly_ingest],
    sensors=[new_patients_sensor],
    resources=rice_resources(RicePaths.from_env()),
    executor=executor_from_env(),  # $RICE_EXECUTOR names a YAML file choosing it (rice_assets.executors)
)
