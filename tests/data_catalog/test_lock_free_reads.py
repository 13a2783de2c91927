"""Reads and the opening of a current catalog never take the writers' lock; inserts are batched."""

import time
from pathlib import Path

import filelock

from data_catalog import ArtifactRecord, Catalog, PatientRecord, lock_path


def test_reads_and_open_do_not_wait_for_the_writers_lock(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    Catalog(path).upsert_patients([PatientRecord("P1", "rice")])
    before = path.stat().st_mtime_ns
    writers = filelock.FileLock(lock_path(path), is_singleton=False)
    other = filelock.FileLock(lock_path(path), is_singleton=False)
    writers.acquire()  # a writer holding the queue for as long as it likes
    try:
        assert not _can_take(other), "the lock file really is held"
        start = time.monotonic()
        catalog = Catalog(path, timeout=1.0)  # current schema: opened read-only, no migration write
        assert catalog.patient_ids() == ["P1"]
        assert catalog.query("SELECT count(*) AS n FROM patients") == [{"n": 1}]
        assert time.monotonic() - start < 1.0
    finally:
        writers.release()
    assert path.stat().st_mtime_ns == before, "opening and reading a current catalog changed the file"


def test_one_call_inserts_many_rows_in_one_transaction(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.duckdb")
    catalog.upsert_patients([PatientRecord(f"P{i:04d}") for i in range(2000)])
    records = [ArtifactRecord(f"a{i}", metadata={"i": i}) for i in range(2000)]
    ids = catalog.record_artifacts("evaluation_tables", "__all__", records)
    assert len(ids) == 2000 and len(catalog.patient_ids()) == 2000
    assert catalog.query("SELECT count(*) AS n FROM artifacts") == [{"n": 2000}]
    assert catalog.replace_rows("metrics", [], where={"scope": "x"}) == 0


def _can_take(lock: filelock.FileLock) -> bool:
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    lock.release()
    return True


def test_atomic_block_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.duckdb")
    try:
        with catalog.atomic() as store:
            store.upsert_patients([PatientRecord("P1", "rice")])
            assert store.patient_ids() == ["P1"], "the block reads its own writes"
            store.record_artifacts("raw_scans", "P1", [ArtifactRecord("mri_postop")])
            raise RuntimeError("killed part-way")
    except RuntimeError:
        pass
    assert catalog.patient_ids() == [] and catalog.artifacts() == []
    with catalog.atomic() as store:
        store.upsert_patients([PatientRecord("P1", "rice")])
        store.record_artifacts("raw_scans", "P1", [ArtifactRecord("mri_postop")])
        store.replace_rows("predictions", [], where={"patient_id": "P1"})
    assert catalog.patient_ids() == ["P1"] and len(catalog.artifacts("raw_scans")) == 1
