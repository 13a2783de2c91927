"""Process bodies for the multi-process catalog tests (importable by 'spawn' children)."""

import hashlib
import time
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import duckdb

from data_catalog import CHANNELS, ArtifactRecord, Catalog, ParentRef, PatientRecord, ScanRecord


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_many(path: str, worker: int, n_patients: int, start: Barrier) -> None:
    """Open (and migrate) the catalog, then write patients, scans and artifacts as fast as possible."""
    start.wait(timeout=60)  # all workers imported: start together
    catalog = Catalog(Path(path))
    for i in range(n_patients):
        pid = f"W{worker}-{i:03d}"
        catalog.upsert_patients(
            [PatientRecord(pid, "rice" if i % 2 else "recurrence", covariates={"w": worker})]
        )
        catalog.record_scans(
            pid,
            [ScanRecord(pid, ch, f"/landing/{pid}/{ch}.nii.gz", _sha(pid + ch), "nifti") for ch in CHANNELS],
        )
        catalog.record_artifacts(
            "raw_scans",
            pid,
            [
                ArtifactRecord(
                    ch,
                    f"/lake/raw_scans/{pid}/{ch}.nii.gz",
                    _sha("raw" + pid + ch),
                    parents=(ParentRef.scan(pid, ch),),
                )
                for ch in CHANNELS
            ],
        )
        # Every worker keeps replacing the same unpartitioned asset: the survivor must be whole.
        catalog.record_artifacts(
            "evaluation_tables",
            "__all__",
            [ArtifactRecord(f"table{k}", metadata={"worker": worker, "i": i}) for k in range(3)],
        )


def hold_duckdb_lock(path: str, seconds: float, ready: Event) -> None:
    """Hold DuckDB's own file lock (bypassing the catalog's lock file) for `seconds`."""
    con = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    con.close()
