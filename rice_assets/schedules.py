"""Schedules: a nightly pass over the landing zone, and retraining when the labelled cohort changed.

`retrain_when_cohort_changed` (cron `RICE_RETRAIN_CRON`, default `0 3 * * *`, nightly at 03:00) compares
the labelled, active, preprocessed patients with the current experiment (the one cv_splits declared last):
patients added, removed, relabelled, or whose registered volumes changed. When something changed it
launches job `retrain_experiment`, which submits one asset backfill of cv_splits, every fold_models cell,
evaluation_tables and champion_model (the Backfills page shows it); otherwise it skips and says why.
"""

import dataclasses
import hashlib
import os

import dagster as dg

from data_catalog import Catalog
from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.evaluation import champion_model, evaluation_tables
from rice_assets.assets.training import cv_splits, fold_models
from rice_assets.experiments import current_profile_name, data_versions, read_experiment, splits_path
from rice_assets.resources import CatalogResource, RiceHomeResource
from rice_models.paths import RicePaths

DEFAULT_RETRAIN_CRON = "0 3 * * *"

ingest_job = dg.define_asset_job(
    "ingest_cohort", selection=[cohort_manifest], description="Validate the landing zone, open partitions"
)

nightly_ingest = dg.ScheduleDefinition(
    job=ingest_job,
    name="nightly_ingest",
    cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: re-validate the landing zone and pick up new patients.",
)


def retrain_cron() -> str:
    """The retraining schedule's cron (`RICE_RETRAIN_CRON`, default nightly at 03:00)."""
    return os.environ.get("RICE_RETRAIN_CRON", DEFAULT_RETRAIN_CRON)


@dataclasses.dataclass(frozen=True)
class CohortChanges:
    """How the labelled cohort differs from the current experiment (patient ids, sorted)."""

    added: list[str]
    removed: list[str]
    relabelled: list[str]
    reprocessed: list[str]
    first: bool = False
    """No experiment yet (cv_splits never ran for the profile)."""

    @property
    def any(self) -> bool:
        return self.first or bool(self.added or self.removed or self.relabelled or self.reprocessed)

    def describe(self) -> str:
        if self.first:
            return "no experiment yet"
        parts = [
            f"{name} {', '.join(ids)}"
            for name, ids in (
                ("added", self.added),
                ("removed", self.removed),
                ("relabelled", self.relabelled),
                ("re-processed", self.reprocessed),
            )
            if ids
        ]
        return "; ".join(parts) or "no labelled patient added, removed or changed"


def cohort_changes(paths: RicePaths, store: Catalog, profile: str) -> CohortChanges:
    """Labelled patients added, removed, relabelled or re-processed since the current experiment.

    "Now" is every active labelled patient with registered volumes for the profile; the experiment is
    the one in `splits.json` (its labels and the data versions of its patients' volumes; patients it
    excluded, e.g. by QC, count as seen).
    """
    processed = set(data_versions_available(store, profile))
    labelled = {
        p.patient_id: p.label
        for p in store.patients(active_only=True)
        if p.label and p.patient_id in processed
    }
    if not splits_path(paths, profile).is_file():
        return CohortChanges([], [], [], [], first=bool(labelled))
    experiment = read_experiment(paths, profile)
    labels: dict[str, str] = experiment["labels"]
    seen = set(labels) | set(experiment.get("excluded", {}))
    current = data_versions(store, profile, sorted(set(labelled) & set(labels)))
    recorded: dict[str, str] = experiment.get("data_versions", {})
    return CohortChanges(
        added=sorted(set(labelled) - seen),
        removed=sorted(set(labels) - set(labelled)),
        relabelled=sorted(p for p in set(labelled) & set(labels) if labelled[p] != labels[p]),
        reprocessed=sorted(p for p, v in current.items() if p in recorded and recorded[p] != v),
    )


def data_versions_available(store: Catalog, profile: str) -> list[str]:
    """Patients with registered volumes recorded for the profile."""
    return sorted({a.partition_key for a in store.artifacts("registered_volumes", profile=profile)})


RETRAIN_ASSETS = (cv_splits, fold_models, evaluation_tables, champion_model)


@dg.op(description="Submit one asset backfill: cv_splits, every fold_models cell, evaluation, champion.")
def submit_retraining(context: dg.OpExecutionContext) -> str:
    from rice_assets.definitions import defs  # the same code location (imported lazily: no cycle)
    from rice_assets.runner import submit_backfill

    targets = {
        asset.key: list(asset.partitions_def.get_partition_keys()) if asset.partitions_def else [None]
        for asset in RETRAIN_ASSETS
    }
    reason = context.run.tags.get("rice/changes", "")
    backfill_id = submit_backfill(
        context.instance, defs.resolve_asset_graph(), targets, f"retraining: {reason}"[:200]
    )
    context.log.info(f"submitted backfill {backfill_id}: {reason}")
    return backfill_id


@dg.job(description="Retrain: submit the asset backfill of cv_splits, fold_models, evaluation, champion.")
def retrain_experiment() -> None:
    submit_retraining()


@dg.schedule(
    job=retrain_experiment,
    cron_schedule=retrain_cron(),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain (split, ablation, evaluation, champion) when labelled patients were added, removed, "
    "relabelled or re-processed since the current experiment; otherwise skip, saying why. Cron: "
    "RICE_RETRAIN_CRON (default nightly, 03:00).",
)
def retrain_when_cohort_changed(
    context: dg.ScheduleEvaluationContext, rice_home: RiceHomeResource, catalog: CatalogResource
) -> dg.RunRequest | dg.SkipReason:
    profile = current_profile_name()
    changes = cohort_changes(rice_home.paths, catalog.open(), profile)
    if not changes.any:
        return dg.SkipReason(f"profile {profile}: {changes.describe()} since the current experiment")
    description = changes.describe()
    context.log.info(f"profile {profile}: retraining: {description}")
    key = hashlib.sha256(f"{profile}:{description}".encode()).hexdigest()[:16]  # once per change set
    return dg.RunRequest(run_key=f"retrain:{key}", tags={"rice/changes": description[:500]})
