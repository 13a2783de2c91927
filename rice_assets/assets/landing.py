"""The landing zone as an observable source asset: one data version per patient (its input checksums).

`landing_scans[P]` is observed by the landing-zone sensor (each tick, for settled folders), by `rice run`
before preprocessing, and by the UI's "Observe" button. `raw_scans` depends on it, so a new checksum makes
that patient's preprocessing and everything made from it stale in Dagster's own terms.
"""

from collections.abc import Iterable, Mapping

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from rice_assets.constants import COHORT_GROUP
from rice_assets.partitions import patients_partitions
from rice_assets.resources import RiceHomeResource
from rice_models.arrival import input_version
from rice_models.landing import LandingError, read_cohort_rows
from rice_models.paths import RicePaths

LANDING_SCANS = dg.AssetKey("landing_scans")


def landing_versions(paths: RicePaths, patient_ids: Iterable[str]) -> dict[str, str]:
    """Patient -> input version (`rice_models.arrival.input_version`) for those with a folder and a row."""
    try:
        rows, _ = read_cohort_rows(paths.cohort_csv)
    except LandingError:
        return {}
    by_id = {(row.get("patient_id") or "").strip(): row for row in rows}
    return {
        pid: input_version(paths.landing / pid, by_id[pid])
        for pid in patient_ids
        if pid in by_id and (paths.landing / pid).is_dir()
    }


def observations(versions: Mapping[str, str]) -> list[dg.AssetObservation]:
    """One observation of `landing_scans` per patient, carrying its input version as the data version."""
    return [
        dg.AssetObservation(asset_key=LANDING_SCANS, partition=pid, tags={DATA_VERSION_TAG: version})
        for pid, version in sorted(versions.items())
    ]


def observe_landing(
    instance: dg.DagsterInstance, paths: RicePaths, patient_ids: Iterable[str]
) -> dict[str, str]:
    """Record the current input version of each patient whose version changed (or was never observed)."""
    versions = landing_versions(paths, patient_ids)
    changed = {pid: v for pid, v in versions.items() if latest_version(instance, pid) != v}
    for event in observations(changed):
        instance.report_runless_asset_event(event)
    return changed


def latest_version(instance: dg.DagsterInstance, patient_id: str) -> str | None:
    """The input version last observed for a patient (None if never)."""
    record = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=LANDING_SCANS, asset_partitions=[patient_id]), limit=1
    ).records
    if not record or record[0].asset_observation is None:
        return None
    return record[0].asset_observation.tags.get(DATA_VERSION_TAG)


@dg.observable_source_asset(
    key=LANDING_SCANS,
    partitions_def=patients_partitions,
    group_name=COHORT_GROUP,
    description="A patient's landing-zone folder and cohort.csv row (label and split aside), versioned by "
    "the checksums of its files: a new version makes the patient's preprocessing stale. Observed by the "
    "sensor `landing_zone_sensor` and by `rice run`.",
)
def landing_scans(context, rice_home: RiceHomeResource) -> dg.DataVersionsByPartition:
    known = context.instance.get_dynamic_partitions(patients_partitions.name)
    versions = landing_versions(rice_home.paths, known)
    return dg.DataVersionsByPartition({pid: dg.DataVersion(v) for pid, v in versions.items()})
