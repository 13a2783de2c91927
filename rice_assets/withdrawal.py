"""Consent withdrawal: a patient removed from cohort.csv leaves the active cohort and its partition, and
its derived files are deleted; the catalog keeps its id with the time it was withdrawn."""

import shutil
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from rice_assets.constants import PATIENT_ASSETS, PATIENTS_PARTITION
from rice_assets.resources import CatalogResource
from rice_models.paths import RicePaths
from rice_models.profiles import PROFILES


def withdraw_patients(
    instance: dg.DagsterInstance, catalog: CatalogResource, paths: RicePaths, patient_ids: Sequence[str]
) -> list[str]:
    """Withdraw patients: mark them in the catalog (their data rows deleted), delete their derived files
    in the lake (every per-patient asset, every profile) and their `patients` partitions.

    The landing zone is the site's and is not touched. Models already trained on a patient keep their
    weights in MLflow; the next experiment (cv_splits) no longer includes the patient.

    Args:
        instance: the Dagster instance holding the `patients` dynamic partitions.
        catalog: the cohort catalog.
        paths: the RICE_HOME layout.
        patient_ids: the patients to withdraw.

    Returns:
        The patients withdrawn now (already withdrawn ones are only cleaned up again).
    """
    removed = catalog.open().withdraw_patients(patient_ids, partitioned_assets=PATIENT_ASSETS)
    lake = paths.lake.resolve()
    for files in removed.values():
        for name in files:
            path = Path(name).resolve()
            if path.is_relative_to(lake):
                path.unlink(missing_ok=True)
    for pid in patient_ids:
        for asset in PATIENT_ASSETS:
            for profile in (None, *PROFILES):
                shutil.rmtree(paths.lake_dir(asset, pid, profile), ignore_errors=True)
    known = set(instance.get_dynamic_partitions(PATIENTS_PARTITION))
    for pid in patient_ids:
        if pid in known:
            instance.delete_dynamic_partition(PATIENTS_PARTITION, pid)
    return sorted(removed)
