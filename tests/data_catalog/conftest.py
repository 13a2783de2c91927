import hashlib
from pathlib import Path

import pytest

from data_catalog import CHANNELS, Catalog, PatientRecord, ScanRecord


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def scan(patient_id: str, channel: str) -> ScanRecord:
    return ScanRecord(
        patient_id=patient_id,
        channel=channel,
        source_path=f"/landing/{patient_id}/{channel}.nii.gz",
        sha256=sha(f"{patient_id}/{channel}"),
        format="nifti",
        modality="RTDOSE" if channel == "dose" else "MR",
        shape=(16, 16, 12),
        spacing=(1.0, 1.0, 2.5),
        affine=((1, 0, 0, -8), (0, 1, 0, -8), (0, 0, 2.5, -15), (0, 0, 0, 1)),
    )


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.duckdb")


@pytest.fixture
def cohort(catalog: Catalog) -> Catalog:
    """A catalog holding patients P1 (dev, rice), P2 (dev, recurrence), P3 (test, unlabelled), with scans."""
    catalog.upsert_patients(
        [
            PatientRecord("P1", "rice"),
            PatientRecord("P2", "recurrence", dose_kind="fraction", n_fractions=30),
            PatientRecord("P3", None, "test"),
        ]
    )
    for pid in ("P1", "P2", "P3"):
        catalog.record_scans(pid, [scan(pid, ch) for ch in CHANNELS])
    return catalog
