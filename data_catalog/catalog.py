"""The cohort catalog: a typed read/write API over one DuckDB file.

Every method is one short transaction under the catalog's cross-process lock (see `connection`);
nothing is held open between calls, so many Dagster processes can share one catalog.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb

from data_catalog import lineage, tables
from data_catalog.codec import from_json, to_json, utc_now
from data_catalog.connection import DEFAULT_TIMEOUT_S, transaction
from data_catalog.migrations import applied_versions, migrate
from data_catalog.records import (
    SPLITS,
    ArtifactRecord,
    LineageNode,
    ParentRef,
    PatientRecord,
    Role,
    ScanRecord,
    Split,
    SplitRecord,
    StoredArtifact,
    artifact_id,
    check_patient_id,
)

_PATIENT_COLUMNS = "patient_id, label, split, dose_kind, n_fractions, covariates"
_SCAN_COLUMNS = "patient_id, channel, source_path, sha256, format, modality, shape, spacing, affine"
_ARTIFACT_FIELDS = (
    "artifact_id", "asset", "partition_key", "name", "path", "sha256", "profile", "settings",
    "code_version", "run_id", "metadata", "created",
)  # fmt: skip
_ARTIFACT_COLUMNS = ", ".join(_ARTIFACT_FIELDS)


def _marks(columns: Sequence[str]) -> str:
    return ", ".join("?" for _ in columns)


def _duplicates(values: Iterable[str]) -> list[str]:
    counts = Counter(values)
    return sorted(value for value, count in counts.items() if count > 1)


class Catalog:
    """The cohort catalog at `path` (created and migrated to the latest schema on first open).

    Args:
        path: The DuckDB file, e.g. `RICE_HOME/catalog.duckdb`; its folder is created if missing.
        timeout: Seconds one call may wait for other processes to release the catalog.
    """

    def __init__(self, path: Path | str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write() as con:
            migrate(con)

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    def _write(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return transaction(self.path, timeout=self.timeout, write=True)

    def _read(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return transaction(self.path, timeout=self.timeout, write=False)

    # ----------------------------------------------------------------- schema

    def schema_version(self) -> int:
        """The highest applied schema version."""
        with self._read() as con:
            return max(applied_versions(con), default=0)

    # --------------------------------------------------------------- patients

    def upsert_patients(self, records: Sequence[PatientRecord], *, prune: bool = False) -> None:
        """Insert new patients and update existing ones, in one transaction.

        Args:
            records: One record per patient; a patient id may appear once.
            prune: Also delete patients (and their scans) that `records` does not list, so the table
                mirrors a cohort.csv exactly.
        """
        if dup := _duplicates(r.patient_id for r in records):
            raise ValueError(f"patient ids listed more than once: {dup}")
        now = utc_now()
        with self._write() as con:
            for r in records:
                con.execute(
                    f"INSERT INTO patients ({_PATIENT_COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (patient_id) DO UPDATE SET label = excluded.label, split = excluded.split, "
                    "dose_kind = excluded.dose_kind, n_fractions = excluded.n_fractions, "
                    "covariates = excluded.covariates, updated = excluded.updated",
                    [r.patient_id, r.label, r.split, r.dose_kind, r.n_fractions, to_json(r.covariates), now],
                )
            if prune:
                keep = [r.patient_id for r in records]
                for table in ("scans", "patients"):
                    con.execute(
                        f"DELETE FROM {table} WHERE patient_id NOT IN (SELECT unnest(?::VARCHAR[]))", [keep]
                    )

    def get_patient(self, patient_id: str) -> PatientRecord | None:
        """The patient's record, or None if unknown."""
        with self._read() as con:
            row = con.execute(
                f"SELECT {_PATIENT_COLUMNS} FROM patients WHERE patient_id = ?", [patient_id]
            ).fetchone()
        return None if row is None else _patient(row)

    def patients(self) -> list[PatientRecord]:
        """All patients, ordered by id."""
        with self._read() as con:
            rows = con.execute(f"SELECT {_PATIENT_COLUMNS} FROM patients ORDER BY patient_id").fetchall()
        return [_patient(row) for row in rows]

    def patient_ids(self) -> list[str]:
        """All patient ids, sorted."""
        with self._read() as con:
            return [row[0] for row in con.execute("SELECT patient_id FROM patients ORDER BY 1").fetchall()]

    def patients_in_split(self, split: Split, *, labelled: bool | None = None) -> list[str]:
        """Patient ids of the 'test' set or the 'dev' (development) set, sorted.

        Args:
            split: 'test' or 'dev'.
            labelled: True keeps labelled patients only, False unlabelled only, None all.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        condition = {None: "TRUE", True: "label IS NOT NULL", False: "label IS NULL"}[labelled]
        with self._read() as con:
            rows = con.execute(
                f"SELECT patient_id FROM patients WHERE split = ? AND {condition} ORDER BY 1", [split]
            ).fetchall()
        return [row[0] for row in rows]

    # ------------------------------------------------------------------ scans

    def record_scans(self, patient_id: str, records: Sequence[ScanRecord]) -> None:
        """Replace all of the patient's scans with `records`, in one transaction.

        Raises:
            ValueError: A record belongs to another patient, a channel repeats, or the patient is unknown.
        """
        check_patient_id(patient_id)
        if others := sorted({r.patient_id for r in records} - {patient_id}):
            raise ValueError(f"record_scans({patient_id!r}) got records of other patients {others}")
        if dup := _duplicates(r.channel for r in records):
            raise ValueError(f"patient {patient_id}: channels listed more than once: {dup}")
        now = utc_now()
        with self._write() as con:
            if not con.execute("SELECT 1 FROM patients WHERE patient_id = ?", [patient_id]).fetchone():
                raise ValueError(f"unknown patient {patient_id!r}: upsert it before recording its scans")
            con.execute("DELETE FROM scans WHERE patient_id = ?", [patient_id])
            for r in records:
                con.execute(
                    f"INSERT INTO scans (scan_id, {_SCAN_COLUMNS}, recorded) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        r.scan_id,
                        r.patient_id,
                        r.channel,
                        r.source_path,
                        r.sha256,
                        r.format,
                        r.modality,
                        to_json(r.shape),
                        to_json(r.spacing),
                        to_json(r.affine),
                        now,
                    ],
                )

    def get_scans(self, patient_id: str) -> list[ScanRecord]:
        """The patient's scans, ordered by channel."""
        with self._read() as con:
            rows = con.execute(
                f"SELECT {_SCAN_COLUMNS} FROM scans WHERE patient_id = ? ORDER BY channel", [patient_id]
            ).fetchall()
        return [_scan(row) for row in rows]

    # -------------------------------------------------------------- artifacts

    def record_artifacts(
        self,
        asset: str,
        partition_key: str,
        artifacts: Sequence[ArtifactRecord],
        *,
        check_parents: bool = True,
    ) -> list[str]:
        """Record the artifacts of one asset partition, replacing whatever it held before.

        The partition's previous artifacts and their lineage rows are deleted and the new ones
        inserted in one transaction: re-materialising a partition is idempotent, and a failure part-way
        leaves the previous recording untouched. An empty `artifacts` clears the partition.

        Args:
            asset: The Dagster asset name.
            partition_key: The partition key (`__all__` for an unpartitioned asset).
            artifacts: The outputs; names must be unique within the partition.
            check_parents: Refuse parents that are not recorded (after this call's own inserts, so an
                artifact may name a sibling as parent).

        Returns:
            The artifact ids, `<asset>/<partition_key>/<name>`, in the order given.
        """
        ids = [artifact_id(asset, partition_key, a.name) for a in artifacts]
        if dup := _duplicates(a.name for a in artifacts):
            raise ValueError(f"{asset}/{partition_key}: artifact names listed more than once: {dup}")
        now = utc_now()
        with self._write() as con:
            con.execute(
                "DELETE FROM lineage WHERE child_id IN "
                "(SELECT artifact_id FROM artifacts WHERE asset = ? AND partition_key = ?)",
                [asset, partition_key],
            )
            con.execute("DELETE FROM artifacts WHERE asset = ? AND partition_key = ?", [asset, partition_key])
            for aid, a in zip(ids, artifacts, strict=True):
                con.execute(
                    f"INSERT INTO artifacts ({_ARTIFACT_COLUMNS}) VALUES ({_marks(_ARTIFACT_FIELDS)})",
                    [
                        aid,
                        asset,
                        partition_key,
                        a.name,
                        a.path,
                        a.sha256,
                        a.profile,
                        to_json(a.settings),
                        a.code_version,
                        a.run_id,
                        to_json(a.metadata),
                        now,
                    ],
                )
                for parent in a.parents:
                    con.execute(
                        "INSERT INTO lineage (child_id, parent_id, parent_kind) VALUES (?, ?, ?)",
                        [aid, parent.id, parent.kind],
                    )
            if check_parents and (missing := _missing_parents(con, asset, partition_key)):
                raise ValueError(f"{asset}/{partition_key}: parents not in the catalog: {missing}")
        return ids

    def get_artifact(self, artifact_id: str) -> StoredArtifact | None:
        """The artifact with this id, or None."""
        found = self._artifacts("artifact_id = ?", [artifact_id])
        return found[0] if found else None

    def artifacts(self, asset: str | None = None, partition_key: str | None = None) -> list[StoredArtifact]:
        """Recorded artifacts, optionally of one asset and/or partition, ordered by id."""
        return self._artifacts(
            "(? IS NULL OR asset = ?) AND (? IS NULL OR partition_key = ?)",
            [asset, asset, partition_key, partition_key],
        )

    def _artifacts(self, where: str, params: list[Any]) -> list[StoredArtifact]:
        with self._read() as con:
            rows = con.execute(
                f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE {where} ORDER BY artifact_id", params
            ).fetchall()
            edges = con.execute(
                f"SELECT child_id, parent_id, parent_kind FROM lineage WHERE child_id IN "
                f"(SELECT artifact_id FROM artifacts WHERE {where}) ORDER BY parent_id",
                params,
            ).fetchall()
        parents: dict[str, list[ParentRef]] = {}
        for child, parent, kind in edges:
            parents.setdefault(child, []).append(ParentRef(parent, kind))
        return [_artifact(row, tuple(parents.get(row[0], ()))) for row in rows]

    # ---------------------------------------------------------------- lineage

    def ancestors(self, node_id: str) -> list[LineageNode]:
        """Every artifact and source scan `node_id` derives from, nearest first (a recursive CTE)."""
        with self._read() as con:
            return lineage.ancestors(con, node_id)

    def descendants(self, node_id: str) -> list[LineageNode]:
        """Every artifact derived from the artifact or scan `node_id`, nearest first."""
        with self._read() as con:
            return lineage.descendants(con, node_id)

    # ----------------------------------------------------------------- splits

    def replace_splits(self, records: Sequence[SplitRecord], *, artifact_id: str | None = None) -> None:
        """Replace the whole `splits` table (the cv_splits asset is unpartitioned)."""
        rows = [
            {
                "patient_id": r.patient_id,
                "fold": r.fold,
                "role": r.role,
                "seed": r.seed,
                "n_folds": r.n_folds,
                "artifact_id": artifact_id,
            }
            for r in records
        ]
        with self._write() as con:
            tables.replace_rows(con, "splits", rows, where={})

    def split_patients(self, role: Role, fold: int | None = None) -> list[str]:
        """Patient ids with `role` ('train'/'val' in `fold`, or 'test'), sorted."""
        with self._read() as con:
            rows = con.execute(
                "SELECT DISTINCT patient_id FROM splits WHERE role = ? AND fold IS NOT DISTINCT FROM ? "
                "ORDER BY 1",
                [role, fold],
            ).fetchall()
        return [row[0] for row in rows]

    # --------------------------------------------------------- generic tables

    def replace_rows(self, table: str, rows: Sequence[Mapping[str, Any]], *, where: Mapping[str, Any]) -> int:
        """Replace the rows of a result table (models, metrics, predictions, ...) matching `where`.

        E.g. `replace_rows("metrics", rows, where={"scope": "cv_val", "combination": "dose", "fold": 3})`.
        `where={}` replaces the whole table. Returns the number of rows inserted.
        """
        with self._write() as con:
            return tables.replace_rows(con, table, rows, where)

    def write_table(
        self, name: str, rows: Sequence[Mapping[str, Any]], *, types: Mapping[str, str] | None = None
    ) -> int:
        """Create or replace a free-form result table (e.g. `ablation`) holding exactly `rows`."""
        with self._write() as con:
            return tables.write_table(con, name, rows, types)

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run ad-hoc read SQL and return dict rows (JSON columns parsed).

        The transaction is always rolled back, so a statement that writes has no effect.
        """
        with self._read() as con:
            return tables.fetch_dicts(con.execute(sql, params))


def _missing_parents(con: duckdb.DuckDBPyConnection, asset: str, partition_key: str) -> list[str]:
    rows = con.execute(
        """
        SELECT DISTINCT l.parent_kind || ' ' || l.parent_id
        FROM lineage l JOIN artifacts c ON c.artifact_id = l.child_id
        WHERE c.asset = ? AND c.partition_key = ?
          AND NOT (l.parent_kind = 'artifact' AND l.parent_id IN (SELECT artifact_id FROM artifacts))
          AND NOT (l.parent_kind = 'scan' AND l.parent_id IN (SELECT scan_id FROM scans))
        ORDER BY 1
        """,
        [asset, partition_key],
    ).fetchall()
    return [row[0] for row in rows]


def _patient(row: tuple[Any, ...]) -> PatientRecord:
    patient_id, label, split, dose_kind, n_fractions, covariates = row
    return PatientRecord(patient_id, label, split, dose_kind, n_fractions, from_json(covariates))


def _scan(row: tuple[Any, ...]) -> ScanRecord:
    patient_id, channel, source_path, sha256, fmt, modality, shape, spacing, affine = row
    return ScanRecord(
        patient_id=patient_id,
        channel=channel,
        source_path=source_path,
        sha256=sha256,
        format=fmt,
        modality=modality,
        shape=from_json(shape),
        spacing=from_json(spacing),
        affine=from_json(affine),
    )


def _artifact(row: tuple[Any, ...], parents: tuple[ParentRef, ...]) -> StoredArtifact:
    values = dict(zip(_ARTIFACT_FIELDS, row, strict=True))
    values["settings"] = from_json(values["settings"])
    values["metadata"] = from_json(values["metadata"])
    return StoredArtifact(**values, parents=parents)
