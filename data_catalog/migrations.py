"""Versioned schema migrations.

`MIGRATIONS` is append-only: version 1 is `schema.sql`; a later change to the schema is a new step
(a packaged `.sql` file or inline SQL) with the next version number, never an edit of an applied one.
Each applied step is recorded in `schema_version` with the checksum of its SQL, so an edited step is
reported instead of leaving a catalog silently out of date.
"""

import hashlib
from dataclasses import dataclass
from importlib import resources

import duckdb

from data_catalog.codec import utc_now


class SchemaMismatchError(RuntimeError):
    """The catalog file was written by a different schema than this code's migrations."""


@dataclass(frozen=True)
class Migration:
    """One schema step: `resource` names a `.sql` file in this package, or `sql` holds the text."""

    version: int
    description: str
    resource: str | None = None
    sql: str | None = None

    def __post_init__(self) -> None:
        if (self.resource is None) == (self.sql is None):
            raise ValueError(f"migration {self.version}: give exactly one of resource or sql")

    def text(self) -> str:
        """The SQL of this step."""
        if self.sql is not None:
            return self.sql
        assert self.resource is not None
        return resources.files(__package__).joinpath(self.resource).read_text(encoding="utf-8")

    def checksum(self) -> str:
        return hashlib.sha256(self.text().encode("utf-8")).hexdigest()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", resource="schema.sql"),
    Migration(
        2,
        "living cohort: profile in artifact ids, experiments, frozen splits, withdrawn patients",
        resource="migration_2.sql",
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

# Tables the typed API owns; generic writers refuse to touch them.
CORE_TABLES = frozenset(
    {"schema_version", "patients", "scans", "artifacts", "lineage", "experiments", "split_resets"}
)


def applied_versions(con: duckdb.DuckDBPyConnection) -> dict[int, str]:
    """Applied version -> recorded checksum; empty for a new catalog."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name = 'schema_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = con.execute("SELECT version, checksum FROM schema_version ORDER BY version").fetchall()
    return {int(version): str(checksum) for version, checksum in rows}


def migrate(con: duckdb.DuckDBPyConnection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply every step not yet recorded, in order, inside the caller's transaction.

    Args:
        con: A connection inside an open transaction (see `connection.transaction`).
        migrations: The steps, in increasing version order.

    Returns:
        The versions applied by this call; empty when the catalog was already current.

    Raises:
        SchemaMismatchError: An applied step's SQL changed since, or the catalog is newer than the code.
    """
    versions = [step.version for step in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"migration versions must increase strictly, got {versions}")
    applied = applied_versions(con)
    known = set(versions)
    if unknown := sorted(set(applied) - known):
        raise SchemaMismatchError(
            f"catalog has schema versions {unknown} that this code does not know; upgrade the code"
        )
    done: list[int] = []
    for step in migrations:
        checksum = step.checksum()
        if step.version in applied:
            if applied[step.version] != checksum:
                raise SchemaMismatchError(
                    f"schema version {step.version} ({step.description}) was edited after this catalog "
                    "applied it; add a new migration step instead, or rebuild the catalog"
                )
            continue
        con.execute(step.text())
        con.execute(
            "INSERT INTO schema_version (version, description, checksum, applied) VALUES (?, ?, ?, ?)",
            [step.version, step.description, checksum, utc_now()],
        )
        done.append(step.version)
    return done
