"""`rice run`: materialise the whole pipeline for the cohort in the landing zone, with progress.

Runs go through the persistent Dagster instance in `$RICE_HOME/dagster`, so every run, partition
and check result shows up in the UI afterwards. A patient whose step fails is reported and
skipped; the other patients go on.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from rice_assets.definitions import ALL_ASSETS, ALL_CHECKS
from rice_assets.resources import rice_resources
from rice_assets.stages import STAGES, Stage
from rice_models.paths import RicePaths

# Step logs stay in the Dagster UI; the terminal shows one progress line per step.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclasses.dataclass(frozen=True)
class StepRun:
    """One materialisation `rice run` made: its stage, label, Dagster run id, wall seconds, outcome."""

    stage: str
    label: str
    run_id: str
    seconds: float
    success: bool


@dataclasses.dataclass
class RunSummary:
    """What `rice run` did: stages run, partitions that failed and why, and every run it made."""

    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    runs: list[StepRun] = dataclasses.field(default_factory=list)

    @property
    def completed(self) -> list[str]:
        """Labels of the runs that succeeded, in order."""
        return [run.label for run in self.runs if run.success]

    @property
    def ok(self) -> bool:
        return not self.failures


def run_pipeline(
    paths: RicePaths,
    instance: dg.DagsterInstance,
    stages: Sequence[Stage] = STAGES,
    echo: Callable[[str], None] = print,
    op_config: Mapping[str, Mapping[str, Any]] | None = None,
    combinations: Sequence[str] | None = None,
) -> RunSummary:
    """Materialise every stage in order, partitioned stages once per partition key.

    A failed partition is reported and the others go on; a failed unpartitioned stage stops the run.

    Args:
        paths: the RICE_HOME to run on.
        instance: the Dagster instance that records the runs.
        stages: the stages to run, in order.
        echo: where progress lines go.
        op_config: run config per asset, e.g. `{"fold_models": {"epochs": 5}}`.
        combinations: train only these channel combinations (default: all seven).
    """
    summary = RunSummary()
    # One line per step: MLflow's warning that fold models are pickled (by design, see
    # rice_models.tracking.SERIALIZATION_FORMAT) would repeat for every cell.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    resources = rice_resources(paths)
    failed_patients: set[str] = set()
    defs = dg.Definitions(
        assets=ALL_ASSETS, asset_checks=ALL_CHECKS, resources=resources, jobs=[s.job for s in stages]
    )
    for stage in stages:
        job = defs.resolve_job_def(stage.job_name)  # resolved once per stage, run once per partition key
        keys: list[str | None] = [None]
        if stage.partitions is not None:
            keys = [
                k
                for k in stage.partitions(instance, paths)
                if _wanted(stage, k, failed_patients, combinations)
            ]
        for index, key in enumerate(keys, start=1):
            label = f"{stage.name}" + (f" [{index}/{len(keys)}] {key}" if key else "")
            start = time.monotonic()
            result = job.execute_in_process(
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                run_config=_run_config(stage, op_config or {}),
            )
            seconds = time.monotonic() - start
            summary.runs.append(StepRun(stage.name, label, result.run_id, seconds, result.success))
            if result.success:
                echo(f"  ok    {label} ({seconds:.1f} s)")
            else:
                reason = _failure_reason(result)
                summary.failures[label] = reason
                if stage.per_patient and key is not None:
                    failed_patients.add(key)
                echo(f"  FAIL  {label}: {reason}")
                if stage.partitions is None:
                    echo(f"  stopping: the stages after {stage.name} need it")
                    return summary
    return summary


def _wanted(stage: Stage, key: str, failed_patients: set[str], combinations: Sequence[str] | None) -> bool:
    if stage.per_patient and key in failed_patients:
        return False
    if stage.per_cell and combinations is not None:
        return key.split("|")[0] in combinations
    return True


EXPERIMENT_DECLARED_BY = {"cv_splits": "fold_models"}
"""Training overrides given for fold_models also go to cv_splits, which declares the experiment."""


def _run_config(stage: Stage, op_config: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """QUIET logging plus the config of this stage's assets (cv_splits also gets fold_models' overrides:
    the experiment it declares is the one the cells train)."""
    config = dict(op_config)
    for declaring, trained in EXPERIMENT_DECLARED_BY.items():
        if trained in op_config:
            config[declaring] = {**op_config[trained], **op_config.get(declaring, {})}
    names = {key.to_user_string() for asset in stage.assets for key in asset.keys}
    ops = {name: {"config": dict(cfg)} for name, cfg in config.items() if name in names}
    return {**QUIET, "ops": ops} if ops else QUIET


def _failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """What stopped the run: a failed blocking check's description (it names the cells or patients), else the
    innermost error message of the first failed step (the user's error, not Dagster's wrapper)."""
    for event in result.all_events:
        evaluation = event.event_specific_data if event.event_type_value == "ASSET_CHECK_EVALUATION" else None
        if evaluation is not None and evaluation.blocking and not evaluation.passed:
            return f"check {evaluation.check_name}: {evaluation.description}"
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return f"{event.step_key}: {error.message.strip()}"
    return "run failed (see the Dagster UI for the log)"
