"""A failure inside a write rolls its whole transaction back: nothing of that call lands."""

import duckdb
import pytest

from data_catalog import ArtifactRecord, Catalog, ParentRef, transaction
from tests.data_catalog.conftest import sha


def _snapshot(catalog: Catalog) -> list[list[dict]]:
    return [
        catalog.query(f"SELECT * FROM {table} ORDER BY ALL")
        for table in ("patients", "scans", "artifacts", "lineage", "splits")
    ]


def _raw(patient: str, tag: str) -> list[ArtifactRecord]:
    return [
        ArtifactRecord(ch, f"/lake/{tag}/{ch}", sha(tag + ch), parents=(ParentRef.scan(patient, ch),))
        for ch in ("mri_postop", "mri_event", "dose")
    ]


def test_failure_on_the_second_artifact_keeps_the_previous_recording(cohort: Catalog) -> None:
    cohort.record_artifacts("raw_scans", "P1", _raw("P1", "v1"))
    before = _snapshot(cohort)
    bad = _raw("P1", "v2")
    bad[1] = ArtifactRecord("mri_event", "/lake/v2/mri_event", metadata={"not json": object()})
    with pytest.raises(TypeError, match="JSON"):
        cohort.record_artifacts("raw_scans", "P1", bad)
    assert _snapshot(cohort) == before


def test_unrecorded_parent_detected_after_the_inserts_rolls_them_back(cohort: Catalog) -> None:
    cohort.record_artifacts("raw_scans", "P1", _raw("P1", "v1"))
    before = _snapshot(cohort)
    bad = _raw("P1", "v2")
    bad[1] = ArtifactRecord("mri_event", parents=(ParentRef.scan("P9", "mri_event"),))
    with pytest.raises(ValueError, match="P9"):
        cohort.record_artifacts("raw_scans", "P1", bad)
    assert _snapshot(cohort) == before


def test_constraint_violation_on_the_second_row_rolls_back(cohort: Catalog) -> None:
    cohort.replace_rows("splits", [{"patient_id": "P3", "role": "test"}], where={})
    before = _snapshot(cohort)
    rows = [
        {"patient_id": "P1", "role": "val", "fold": 0},
        {"patient_id": "P2", "role": "holdout", "fold": 0},
    ]
    with pytest.raises(duckdb.ConstraintException):
        cohort.replace_rows("splits", rows, where={})
    assert _snapshot(cohort) == before


def test_schema_checks_hold_without_the_python_validation(cohort: Catalog) -> None:
    statements = [
        "UPDATE patients SET label = 'tumour' WHERE patient_id = 'P1'",
        "UPDATE patients SET dose_kind = 'fraction', n_fractions = NULL WHERE patient_id = 'P1'",
        "INSERT INTO patients (patient_id, updated) VALUES ('bad id', now())",
        "UPDATE scans SET sha256 = 'abc' WHERE patient_id = 'P1'",
        "UPDATE scans SET channel = 'dose' WHERE scan_id = 'scan/P1/mri_event'",
        "INSERT INTO lineage VALUES ('a/b/c', 'x', 'file')",
        "INSERT INTO artifacts (artifact_id, asset, partition_key, name, created) "
        "VALUES ('a/b/d', 'a', 'b', 'c', now())",
        "INSERT INTO splits (patient_id, role, fold, created) VALUES ('P1', 'test', 2, now())",
        "INSERT INTO predictions (patient_id, scope, combination, prob_rice, created) "
        "VALUES ('P1', 't', 'dose', 1.5, now())",
    ]
    before = _snapshot(cohort)
    for sql in statements:
        with pytest.raises(duckdb.ConstraintException), transaction(cohort.path) as con:
            con.execute(sql)
    assert _snapshot(cohort) == before


def test_an_exception_in_a_transaction_block_rolls_back(cohort: Catalog) -> None:
    with pytest.raises(RuntimeError, match="boom"), transaction(cohort.path) as con:
        con.execute("DELETE FROM scans")
        raise RuntimeError("boom")
    assert len(cohort.get_scans("P1")) == 3


def test_query_never_writes(cohort: Catalog) -> None:
    with pytest.raises(duckdb.InvalidInputException, match="read-only"):
        cohort.query("DELETE FROM patients")
    assert cohort.patient_ids() == ["P1", "P2", "P3"]
