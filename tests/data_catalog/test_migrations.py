from pathlib import Path

import pytest

from data_catalog import (
    LATEST_VERSION,
    MIGRATIONS,
    Catalog,
    Migration,
    SchemaMismatchError,
    migrate,
    transaction,
)

TABLES = {
    "schema_version",
    "patients",
    "scans",
    "artifacts",
    "lineage",
    "splits",
    "models",
    "metrics",
    "predictions",
}


def test_new_catalog_is_migrated_and_version_recorded(catalog: Catalog) -> None:
    assert catalog.schema_version() == LATEST_VERSION == 1
    names = {r["table_name"] for r in catalog.query("SELECT table_name FROM information_schema.tables")}
    assert TABLES <= names
    (row,) = catalog.query("SELECT version, description, checksum, applied FROM schema_version")
    assert row["version"] == 1
    assert row["description"] == "initial schema"
    assert row["checksum"] == MIGRATIONS[0].checksum()
    assert row["applied"] is not None


def test_reopening_and_migrating_again_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    Catalog(path)
    catalog = Catalog(path)
    with transaction(path) as con:
        assert migrate(con) == []
    assert catalog.query("SELECT count(*) AS n FROM schema_version") == [{"n": 1}]


def test_a_later_step_is_applied_once_and_recorded(catalog: Catalog) -> None:
    steps = (*MIGRATIONS, Migration(2, "add site", sql="ALTER TABLE patients ADD COLUMN site TEXT"))
    with transaction(catalog.path) as con:
        assert migrate(con, steps) == [2]
    with transaction(catalog.path) as con:
        assert migrate(con, steps) == []
    assert [r["version"] for r in catalog.query("SELECT version FROM schema_version ORDER BY 1")] == [1, 2]
    assert catalog.query("SELECT site FROM patients") == []


def test_an_edited_step_is_refused(catalog: Catalog) -> None:
    edited = (Migration(1, "initial schema", sql="CREATE TABLE x (a INTEGER)"),)
    with pytest.raises(SchemaMismatchError, match="edited"), transaction(catalog.path) as con:
        migrate(con, edited)


def test_a_catalog_newer_than_the_code_is_refused(catalog: Catalog) -> None:
    steps = (*MIGRATIONS, Migration(2, "future", sql="CREATE TABLE future (a INTEGER)"))
    with transaction(catalog.path) as con:
        migrate(con, steps)
    with pytest.raises(SchemaMismatchError, match=r"\[2\]"):
        Catalog(catalog.path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({}, "exactly one"), ({"sql": "SELECT 1", "resource": "schema.sql"}, "exactly one")],
)
def test_migration_needs_exactly_one_source(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Migration(3, "bad", **kwargs)


def test_migration_versions_must_increase(catalog: Catalog) -> None:
    steps = (Migration(2, "b", sql="SELECT 1"), Migration(1, "a", sql="SELECT 1"))
    with pytest.raises(ValueError, match="increase"), transaction(catalog.path) as con:
        migrate(con, steps)
