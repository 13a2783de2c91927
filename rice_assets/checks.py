"""Asset checks: data-quality gates shown in the Dagster UI, each naming the patient it concerns."""

import json

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.training import cv_splits, fold_models
from rice_assets.config import ProfileConfig
from rice_assets.experiments import cell_check
from rice_assets.resources import CatalogResource, RiceHomeResource


@dg.asset_check(asset=cohort_manifest, description="Every cohort.csv row and patient folder is valid.")
def cohort_has_no_problems(rice_home: RiceHomeResource) -> dg.AssetCheckResult:
    manifest = rice_home.paths.lake_dir("cohort_manifest") / "manifest.json"
    problems = json.loads(manifest.read_text())["problems"]
    patients = sorted({p["patient_id"] for p in problems if p["patient_id"]})
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(problems)} problem(s); rejected patients: {', '.join(patients) or 'none'}",
        metadata={"problems": dg.MetadataValue.json(problems)},
    )


@dg.asset_check(
    asset=fold_models,
    blocking=True,
    additional_deps=[cv_splits],
    description="Every cell of every compared combination (a combination with at least one cell of the "
    "current experiment) exists and belongs to the experiment cv_splits declared last. Blocks "
    "evaluation_tables and champion_model in the same run (job evaluate_experiment, `rice run`); names "
    "the missing and stale cells. In a run that trains cells it only reports progress (severity warn).",
)
def experiment_is_complete(
    context: dg.AssetCheckExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
) -> dg.AssetCheckResult:
    profile = config.resolve()
    check, _ = cell_check(catalog.open(), rice_home.paths, profile.name)
    training = context.has_partition_key  # a run of fold_models cells: report progress, do not fail it
    return dg.AssetCheckResult(
        passed=check.ok,
        severity=dg.AssetCheckSeverity.WARN if training else dg.AssetCheckSeverity.ERROR,
        description=f"profile {profile.name}: {check.describe()}",
        metadata={
            "experiment_version": check.current,
            "compared": dg.MetadataValue.json(list(check.compared)),
            "missing_or_stale": dg.MetadataValue.json(list(check.problems)),
            "left_out": dg.MetadataValue.json(list(check.left_out)),
        },
    )
