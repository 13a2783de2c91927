"""Real processes sharing one catalog file, as parallel Dagster partitions do."""

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from data_catalog import LATEST_VERSION, ArtifactRecord, Catalog, CatalogBusyError, PatientRecord
from tests.data_catalog import workers

N_WORKERS = 3
N_PATIENTS = 6


def test_parallel_processes_write_every_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"  # not created yet: the workers race to create and migrate it
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(N_WORKERS)
    procs = [
        ctx.Process(target=workers.write_many, args=(str(path), w, N_PATIENTS, start))
        for w in range(N_WORKERS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * N_WORKERS

    catalog = Catalog(path)
    assert catalog.schema_version() == LATEST_VERSION
    assert catalog.query("SELECT count(*) AS n FROM schema_version") == [{"n": LATEST_VERSION}]
    expected = sorted(f"W{w}-{i:03d}" for w in range(N_WORKERS) for i in range(N_PATIENTS))
    assert catalog.patient_ids() == expected
    (counts,) = catalog.query(
        "SELECT (SELECT count(*) FROM scans) AS scans, "
        "(SELECT count(*) FROM artifacts WHERE asset = 'raw_scans') AS raw, "
        "(SELECT count(*) FROM lineage) AS lineage"
    )
    assert counts == {"scans": 3 * len(expected), "raw": 3 * len(expected), "lineage": 3 * len(expected)}
    for pid in (expected[0], expected[-1]):
        assert [n.kind for n in catalog.ancestors(f"raw_scans/{pid}/dose")] == ["scan"]
    # The workers really interleaved: each one's writes span the others' first writes.
    spans = catalog.query(
        "SELECT split_part(patient_id, '-', 1) AS w, min(updated) AS first, max(updated) AS last "
        "FROM patients GROUP BY ALL"
    )
    assert max(s["first"] for s in spans) < min(s["last"] for s in spans)
    # The partition every worker kept replacing holds one whole recording, never a mix.
    survivors = catalog.artifacts("evaluation_tables", "__all__")
    assert len(survivors) == 3
    assert len({(a.metadata["worker"], a.metadata["i"]) for a in survivors}) == 1


def test_duckdb_lock_held_outside_the_protocol_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    catalog = Catalog(path)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=workers.hold_duckdb_lock, args=(str(path), 1.0, ready))
    holder.start()
    try:
        assert ready.wait(timeout=30)
        with pytest.raises(CatalogBusyError, match="locked by another process"):
            Catalog(path, timeout=0.2).patient_ids()
        started = time.monotonic()
        assert catalog.patient_ids() == []  # retries with backoff until the holder lets go
        assert time.monotonic() - started > 0.3
    finally:
        holder.join(timeout=30)
    assert holder.exitcode == 0


def test_threads_of_one_process_are_serialised_too(catalog: Catalog) -> None:
    def write(worker: int) -> None:
        for i in range(3):
            catalog.upsert_patients([PatientRecord(f"T{worker}-{i}")])
            catalog.record_artifacts(
                "shared", "__all__", [ArtifactRecord(f"a{k}", metadata={"w": worker}) for k in range(3)]
            )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write, range(4)))
    assert len(catalog.patient_ids()) == 12
    survivors = catalog.artifacts("shared")
    assert len(survivors) == 3 and len({a.metadata["w"] for a in survivors}) == 1
