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
    "ablation",
    "experiments",
    "split_resets",
}


def test_new_catalog_is_migrated_and_version_recorded(catalog: Catalog) -> None:
    assert catalog.schema_version() == LATEST_VERSION == 2
    names = {r["table_name"] for r in catalog.query("SELECT table_name FROM information_schema.tables")}
    assert TABLES <= names
    rows = catalog.query("SELECT version, description, checksum, applied FROM schema_version ORDER BY 1")
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[0]["description"] == "initial schema"
    assert [r["checksum"] for r in rows] == [step.checksum() for step in MIGRATIONS]
    assert all(r["applied"] is not None for r in rows)


def test_reopening_and_migrating_again_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    Catalog(path)
    catalog = Catalog(path)
    with transaction(path) as con:
        assert migrate(con) == []
    assert catalog.query("SELECT count(*) AS n FROM schema_version") == [{"n": LATEST_VERSION}]


def test_a_later_step_is_applied_once_and_recorded(catalog: Catalog) -> None:
    later = LATEST_VERSION + 1
    steps = (*MIGRATIONS, Migration(later, "add site", sql="ALTER TABLE patients ADD COLUMN site TEXT"))
    with transaction(catalog.path) as con:
        assert migrate(con, steps) == [later]
    with transaction(catalog.path) as con:
        assert migrate(con, steps) == []
    versions = [r["version"] for r in catalog.query("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == [*range(1, LATEST_VERSION + 1), later]
    assert catalog.query("SELECT site FROM patients") == []


def test_an_edited_step_is_refused(catalog: Catalog) -> None:
    edited = (Migration(1, "initial schema", sql="CREATE TABLE x (a INTEGER)"), *MIGRATIONS[1:])
    with pytest.raises(SchemaMismatchError, match="edited"), transaction(catalog.path) as con:
        migrate(con, edited)


def test_a_catalog_newer_than_the_code_is_refused(catalog: Catalog) -> None:
    future = LATEST_VERSION + 1
    steps = (*MIGRATIONS, Migration(future, "future", sql="CREATE TABLE future (a INTEGER)"))
    with transaction(catalog.path) as con:
        migrate(con, steps)
    with pytest.raises(SchemaMismatchError, match=rf"\[{future}\]"):
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
