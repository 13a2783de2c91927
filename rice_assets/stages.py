"""The pipeline's stages in the order `rice run` submits them (each as an asset backfill)."""

import dataclasses
from collections.abc import Callable, Sequence

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.evaluation import champion_model, evaluation_tables, occlusion_maps
from rice_assets.assets.inference import patient_predictions
from rice_assets.assets.preprocessing import dose_maps, raw_scans, registered_volumes
from rice_assets.assets.training import cv_splits, fold_models
from rice_assets.checks import experiment_is_complete
from rice_assets.constants import PATIENTS_PARTITION, TEST_PATIENTS_PARTITION, UNLABELLED_PARTITION
from rice_assets.partitions import cell_partitions
from rice_models.paths import RicePaths

PartitionKeys = Callable[[dg.DagsterInstance, RicePaths], Sequence[str]]


def patient_keys(instance: dg.DagsterInstance, paths: RicePaths) -> Sequence[str]:
    return instance.get_dynamic_partitions(PATIENTS_PARTITION)


def cell_keys(instance: dg.DagsterInstance, paths: RicePaths) -> Sequence[str]:
    return cell_partitions.get_partition_keys(dynamic_partitions_store=instance)


def test_patient_keys(instance: dg.DagsterInstance, paths: RicePaths) -> Sequence[str]:
    """The `test_patients` partitions (the current experiment's test set, kept by cv_splits)."""
    return instance.get_dynamic_partitions(TEST_PATIENTS_PARTITION)


def unlabelled_patient_keys(instance: dg.DagsterInstance, paths: RicePaths) -> Sequence[str]:
    """The `unlabelled_patients` partitions (kept by cohort_manifest and the landing-zone sensor)."""
    return instance.get_dynamic_partitions(UNLABELLED_PARTITION)


@dataclasses.dataclass(frozen=True)
class Stage:
    """Assets materialised together, once, or once per partition key when `partitions` is set.

    `rice run` submits each stage's partitions that are missing or stale as an asset backfill (its runs
    go through the instance's run queue); `always` stages (cheap, deterministic data versions) are
    submitted every time. Each stage is also a Dagster asset job, `<name>_stage` (`job`), listed in
    the definitions, to launch by hand from the UI. `per_patient` stages skip patients whose earlier stage
    failed; `per_cell` stages (combination|fold keys) can be limited to some combinations; `checks` run in
    the job's runs (a blocking one stops the stage's assets when it fails).
    """

    name: str
    assets: tuple[dg.AssetsDefinition, ...]
    partitions: PartitionKeys | None = None
    per_patient: bool = False
    per_cell: bool = False
    checks: tuple[dg.AssetChecksDefinition, ...] = ()
    always: bool = False

    def selection(self) -> dg.AssetSelection:
        """The stage's assets (with their own checks) and its extra checks."""
        selection = dg.AssetSelection.assets(*self.assets)
        return selection | dg.AssetSelection.checks(*self.checks) if self.checks else selection

    @property
    def job(self):  # an unresolved asset job (a type dagster does not export)
        """The asset job that materialises this stage's assets and their checks."""
        return dg.define_asset_job(
            self.job_name, selection=self.selection(), description=STAGE_JOB_DESCRIPTION
        )

    @property
    def job_name(self) -> str:
        return f"{self.name}_stage"


STAGE_JOB_DESCRIPTION = (
    "A stage of `rice run` (which submits it as an asset backfill, one run per partition)."
)


STAGES: tuple[Stage, ...] = (
    Stage("cohort", (cohort_manifest,), always=True),
    Stage("preprocessing", (raw_scans, dose_maps, registered_volumes), patient_keys, per_patient=True),
    Stage("cv_splits", (cv_splits,), always=True),
    Stage("training", (fold_models,), cell_keys, per_cell=True),
    Stage("evaluation", (evaluation_tables,), checks=(experiment_is_complete,)),
    Stage("champion", (champion_model,), checks=(experiment_is_complete,)),
    Stage("occlusion", (occlusion_maps,), test_patient_keys),
    Stage("prediction", (patient_predictions,), unlabelled_patient_keys),
)
