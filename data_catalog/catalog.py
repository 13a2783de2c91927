"""The cohort catalog: a typed read/write API over one DuckDB file.

Every write is one short transaction under the catalog's cross-process writers' lock; every read is a
short read-only transaction that takes no lock of ours (see `connection`). Nothing is held open between
calls, so many Dagster processes can share one catalog. Rows are inserted in batches
(`executemany`), one transaction per call.
"""

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from data_catalog import lineage, tables
from data_catalog.codec import from_json, to_json, utc_now
from data_catalog.connection import DEFAULT_TIMEOUT_S, read_transaction, transaction
from data_catalog.migrations import MIGRATIONS, applied_versions, migrate
from data_catalog.records import (
    SPLITS,
    ArtifactRecord,
    ExperimentRecord,
    LineageNode,
    ParentRef,
    PatientRecord,
    Role,
    ScanRecord,
    Split,
    SplitMemory,
    SplitRecord,
    StoredArtifact,
    artifact_id,
    check_patient_id,
    check_profile,
)

_PATIENT_COLUMNS = "patient_id, label, split, dose_kind, n_fractions, covariates"
_PATIENT_READ = f"{_PATIENT_COLUMNS}, withdrawn"
_EPOCH = "TIMESTAMP '1970-01-01'"


class _Infer:
    """Sentinel: take the profile from the records (`Catalog.record_artifacts`)."""


_INFER = _Infer()
_SCAN_COLUMNS = "patient_id, channel, source_path, sha256, format, modality, shape, spacing, affine"
_ARTIFACT_FIELDS = (
    "artifact_id", "asset", "partition_key", "name", "path", "sha256", "profile", "settings",
    "code_version", "run_id", "metadata", "created",
)  # fmt: skip
_ARTIFACT_COLUMNS = ", ".join(_ARTIFACT_FIELDS)


def _marks(columns: Sequence[Any]) -> str:
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
        self._con: duckdb.DuckDBPyConnection | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._is_current():
            with self._write() as con:
                migrate(con)

    def _is_current(self) -> bool:
        """Whether the file exists and holds every migration of this code, checked read-only."""
        if not self.path.is_file():
            return False
        with self._read() as con:
            applied = applied_versions(con)
        return applied == {step.version: step.checksum() for step in MIGRATIONS}

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    def _write(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            return nullcontext(self._con)
        return transaction(self.path, timeout=self.timeout, write=True)

    def _read(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            return nullcontext(self._con)
        return read_transaction(self.path, timeout=self.timeout)

    @contextmanager
    def atomic(self) -> Iterator["Catalog"]:
        """Make every call on this handle inside the block one transaction: all of it lands or none.

        An asset records its patients, scans, artifacts and result rows this way, so a crash part-way
        leaves the catalog as it was. Reads inside the block see the block's own writes. The writers'
        lock is held for the whole block: keep slow work (training, image maths) outside it.

        Raises:
            RuntimeError: the handle is already inside an `atomic` block.
            CatalogBusyError: the writers' lock could not be had within the timeout.
        """
        if self._con is not None:
            raise RuntimeError(f"{self!r} is already inside an atomic block")
        with transaction(self.path, timeout=self.timeout, write=True) as con:
            self._con = con
            try:
                yield self
            finally:
                self._con = None

    @property
    def in_transaction(self) -> bool:
        """Whether calls on this handle currently join an `atomic` block."""
        return self._con is not None

    # ----------------------------------------------------------------- schema

    def schema_version(self) -> int:
        """The highest applied schema version."""
        with self._read() as con:
            return max(applied_versions(con), default=0)

    # --------------------------------------------------------------- patients

    def upsert_patients(self, records: Sequence[PatientRecord], *, prune: bool = False) -> None:
        """Insert new patients and update existing ones, in one transaction.

        A patient listed here is active: a `withdrawn` mark from an earlier removal is cleared.

        Args:
            records: One record per patient; a patient id may appear once.
            prune: Also delete patients (and their scans) that `records` does not list, so the table
                mirrors a cohort.csv exactly.
        """
        if dup := _duplicates(r.patient_id for r in records):
            raise ValueError(f"patient ids listed more than once: {dup}")
        now = utc_now()
        rows = [
            [r.patient_id, r.label, r.split, r.dose_kind, r.n_fractions, to_json(r.covariates), now]
            for r in records
        ]
        with self._write() as con:
            _insert_many(
                con,
                f"INSERT INTO patients ({_PATIENT_COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (patient_id) DO UPDATE SET label = excluded.label, split = excluded.split, "
                "dose_kind = excluded.dose_kind, n_fractions = excluded.n_fractions, "
                "covariates = excluded.covariates, updated = excluded.updated, withdrawn = NULL",
                rows,
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
                f"SELECT {_PATIENT_READ} FROM patients WHERE patient_id = ?", [patient_id]
            ).fetchone()
        return None if row is None else _patient(row)

    def patients(self, *, active_only: bool = False) -> list[PatientRecord]:
        """All patients, ordered by id.

        Args:
            active_only: Leave out patients marked withdrawn (removed from cohort.csv).
        """
        where = "WHERE withdrawn IS NULL" if active_only else ""
        with self._read() as con:
            rows = con.execute(f"SELECT {_PATIENT_READ} FROM patients {where} ORDER BY patient_id").fetchall()
        return [_patient(row) for row in rows]

    def withdraw_patients(
        self, patient_ids: Sequence[str], *, partitioned_assets: Sequence[str]
    ) -> dict[str, list[str]]:
        """Mark patients withdrawn (now) and delete what the catalog holds of their data, in one transaction.

        The `patients` row stays, with `withdrawn` set and its covariates cleared, so the catalog says
        when; its scans, the artifacts of its partitions of `partitioned_assets` (every profile) with
        their lineage rows, and its rows of `predictions` are deleted. Split rows stay: they record that
        earlier models trained on the patient. Already withdrawn or unknown ids are skipped.

        Args:
            patient_ids: The patients to withdraw.
            partitioned_assets: The assets partitioned by patient (their partition key is the id).

        Returns:
            Patient id -> the file paths its deleted artifacts had (for the caller to delete).
        """
        for pid in patient_ids:
            check_patient_id(pid)
        now = utc_now()
        removed: dict[str, list[str]] = {}
        with self._write() as con:
            for pid in patient_ids:
                row = con.execute("SELECT withdrawn FROM patients WHERE patient_id = ?", [pid]).fetchone()
                if row is None or row[0] is not None:
                    continue
                scope = "asset IN (SELECT unnest(?::VARCHAR[])) AND partition_key = ?"
                params = [list(partitioned_assets), pid]
                paths = con.execute(
                    f"SELECT path FROM artifacts WHERE {scope} AND path IS NOT NULL ORDER BY 1", params
                ).fetchall()
                removed[pid] = [str(p[0]) for p in paths]
                con.execute(
                    "DELETE FROM lineage WHERE child_id IN "
                    f"(SELECT artifact_id FROM artifacts WHERE {scope})",
                    params,
                )
                con.execute(f"DELETE FROM artifacts WHERE {scope}", params)
                con.execute("DELETE FROM scans WHERE patient_id = ?", [pid])
                con.execute("DELETE FROM predictions WHERE patient_id = ?", [pid])
                con.execute(
                    "UPDATE patients SET withdrawn = ?, covariates = '{}', updated = ? WHERE patient_id = ?",
                    [now, now, pid],
                )
        return removed

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
                f"SELECT patient_id FROM patients WHERE split = ? AND withdrawn IS NULL AND {condition} "
                "ORDER BY 1",
                [split],
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
            _insert_many(
                con,
                f"INSERT INTO scans (scan_id, {_SCAN_COLUMNS}, recorded) VALUES ({_marks(range(11))})",
                [
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
                    ]  # fmt: skip
                    for r in records
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
        profile: "str | None | _Infer" = _INFER,
        check_parents: bool = True,
    ) -> list[str]:
        """Record the artifacts of one asset partition and profile, replacing whatever it held before.

        The previous artifacts of the partition for the same profile (None: profile-independent) and
        their lineage rows are deleted and the new ones inserted in one transaction: re-materialising a
        partition is idempotent, a failure part-way leaves the previous recording untouched, and another
        profile's artifacts of the partition are never touched. An empty `artifacts` clears the partition
        for that profile.

        Args:
            asset: The Dagster asset name.
            partition_key: The partition key (`__all__` for an unpartitioned asset).
            artifacts: The outputs; names must be unique within the partition.
            profile: The profile the outputs belong to; by default the one the records share (None when
                there are none).
            check_parents: Refuse parents that are not recorded (after this call's own inserts, so an
                artifact may name a sibling as parent).

        Returns:
            The artifact ids (`artifact_id`: `<asset>[@<profile>]/<partition_key>/<name>`), in order.

        Raises:
            ValueError: Repeated names, records of different profiles, or parents not recorded.
        """
        scope = _record_profile(artifacts, profile)
        ids = [artifact_id(asset, partition_key, a.name, scope) for a in artifacts]
        if dup := _duplicates(a.name for a in artifacts):
            raise ValueError(f"{asset}/{partition_key}: artifact names listed more than once: {dup}")
        now = utc_now()
        where = "asset = ? AND partition_key = ? AND profile IS NOT DISTINCT FROM ?"
        with self._write() as con:
            con.execute(
                f"DELETE FROM lineage WHERE child_id IN (SELECT artifact_id FROM artifacts WHERE {where})",
                [asset, partition_key, scope],
            )
            con.execute(f"DELETE FROM artifacts WHERE {where}", [asset, partition_key, scope])
            _insert_many(
                con,
                f"INSERT INTO artifacts ({_ARTIFACT_COLUMNS}) VALUES ({_marks(_ARTIFACT_FIELDS)})",
                [
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
                    ]  # fmt: skip
                    for aid, a in zip(ids, artifacts, strict=True)
                ],
            )
            _insert_many(
                con,
                "INSERT INTO lineage (child_id, parent_id, parent_kind) VALUES (?, ?, ?)",
                [[aid, p.id, p.kind] for aid, a in zip(ids, artifacts, strict=True) for p in a.parents],
            )
            if check_parents and (missing := _missing_parents(con, asset, partition_key)):
                raise ValueError(f"{asset}/{partition_key}: parents not in the catalog: {missing}")
        return ids

    def get_artifact(self, artifact_id: str) -> StoredArtifact | None:
        """The artifact with this id, or None."""
        found = self._artifacts("artifact_id = ?", [artifact_id])
        return found[0] if found else None

    def artifacts(
        self,
        asset: str | None = None,
        partition_key: str | None = None,
        *,
        profile: "str | None | _Infer" = _INFER,
    ) -> list[StoredArtifact]:
        """Recorded artifacts, optionally of one asset, partition and profile (None: profile-independent
        ones only; by default any profile), ordered by id."""
        if isinstance(profile, _Infer):
            return self._artifacts(
                "(? IS NULL OR asset = ?) AND (? IS NULL OR partition_key = ?)",
                [asset, asset, partition_key, partition_key],
            )
        return self._artifacts(
            "(? IS NULL OR asset = ?) AND (? IS NULL OR partition_key = ?) "
            "AND profile IS NOT DISTINCT FROM ?",
            [asset, asset, partition_key, partition_key, profile],
        )

    def artifacts_by_partition(
        self, asset: str, partition_keys: Iterable[str] | None = None, *, profile: str | None
    ) -> dict[str, list[StoredArtifact]]:
        """The recorded artifacts of `asset` and `profile` (None: profile-independent) for several
        partitions (None: every partition) in one query, by partition key (a key with none recorded
        is absent), each list ordered by id."""
        found: dict[str, list[StoredArtifact]] = {}
        if partition_keys is None:
            artifacts = self.artifacts(asset, profile=profile)
        else:
            keys = sorted(set(partition_keys))
            if not keys:
                return found
            where = "asset = ? AND partition_key IN (SELECT UNNEST(?)) AND profile IS NOT DISTINCT FROM ?"
            artifacts = self._artifacts(where, [asset, keys, profile])
        for artifact in artifacts:
            found.setdefault(artifact.partition_key, []).append(artifact)
        return found

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

    def replace_splits(
        self,
        records: Sequence[SplitRecord],
        *,
        profile: str,
        experiment_version: str,
        artifact_id: str | None = None,
    ) -> None:
        """Replace the `splits` rows of one (profile, experiment version); other experiments' rows stay,
        so the catalog remembers every patient a profile's models were trained, validated or tested on."""
        check_profile(profile)
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
        where = {"profile": profile, "experiment_version": experiment_version}
        with self._write() as con:
            tables.replace_rows(con, "splits", rows, where=where)

    def split_patients(
        self,
        role: Role,
        fold: int | None = None,
        *,
        profile: str | None = None,
        experiment_version: str | None = None,
    ) -> list[str]:
        """Patient ids with `role` ('train'/'val' in `fold`, or 'test'), sorted, optionally of one profile
        and/or experiment version."""
        with self._read() as con:
            rows = con.execute(
                "SELECT DISTINCT patient_id FROM splits WHERE role = ? AND fold IS NOT DISTINCT FROM ? "
                "AND (? IS NULL OR profile = ?) AND (? IS NULL OR experiment_version = ?) ORDER BY 1",
                [role, fold, profile, profile, experiment_version, experiment_version],
            ).fetchall()
        return [row[0] for row in rows]

    def split_memory(self, profile: str) -> SplitMemory:
        """What the profile's splits since its last reset fixed: test patients stay test, patients a fold
        model trained or validated on stay development (see `SplitMemory`)."""
        check_profile(profile)
        since = f"coalesce((SELECT max(reset_at) FROM split_resets WHERE profile = $profile), {_EPOCH})"
        with self._read() as con:
            rows = con.execute(
                "SELECT DISTINCT patient_id, role FROM splits "
                f"WHERE profile = $profile AND created > {since}",
                {"profile": profile},
            ).fetchall()
            generated = con.execute(
                "SELECT bool_or(test_generated) FROM experiments "
                f"WHERE profile = $profile AND created > {since}",
                {"profile": profile},
            ).fetchone()
            reset = con.execute(
                "SELECT max(reset_at) FROM split_resets WHERE profile = ?", [profile]
            ).fetchone()
        return SplitMemory(
            test=frozenset(pid for pid, role in rows if role == "test"),
            development=frozenset(pid for pid, role in rows if role != "test"),
            test_generated=None if generated is None else generated[0],
            reset_at=None if reset is None else reset[0],
        )

    def reset_splits(self, profile: str, reason: str | None = None) -> datetime:
        """Record an explicit reset of the profile's frozen split (`rice split --reset`); return its time.

        The next `cv_splits` draws the test set and folds afresh; earlier split rows stay as history.
        """
        check_profile(profile)
        now = utc_now()
        with self._write() as con:
            con.execute(
                "INSERT INTO split_resets (profile, reset_at, reason) VALUES (?, ?, ?)",
                [profile, now, reason],
            )
        return now

    # ------------------------------------------------------------ experiments

    def record_experiment(self, record: ExperimentRecord) -> None:
        """Record a declared experiment; declaring the same version again keeps the first record."""
        with self._write() as con:
            con.execute(
                "INSERT INTO experiments (experiment_version, profile, settings, code_version, "
                "data_versions, test_generated, n_test, n_development, excluded, artifact_id, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (experiment_version) DO NOTHING",
                [
                    record.experiment_version,
                    record.profile,
                    to_json(record.settings),
                    record.code_version,
                    to_json(record.data_versions),
                    record.test_generated,
                    record.n_test,
                    record.n_development,
                    to_json(record.excluded),
                    record.artifact_id,
                    utc_now(),
                ],
            )

    def get_experiment(self, experiment_version: str) -> ExperimentRecord | None:
        """The declared experiment with this version, or None."""
        with self._read() as con:
            row = con.execute(
                "SELECT experiment_version, profile, settings, code_version, data_versions, test_generated, "
                "n_test, n_development, excluded, artifact_id FROM experiments WHERE experiment_version = ?",
                [experiment_version],
            ).fetchone()
        if row is None:
            return None
        version, profile, settings, code, data, generated, n_test, n_dev, excluded, aid = row
        return ExperimentRecord(
            version, profile, from_json(settings), code, from_json(data), bool(generated), n_test, n_dev,
            from_json(excluded), aid,
        )  # fmt: skip

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

        It runs on a read-only connection: a statement that writes is refused by DuckDB
        (`duckdb.InvalidInputException`) and changes nothing.
        """
        with self._read() as con:
            return tables.fetch_dicts(con.execute(sql, params))


def _insert_many(con: duckdb.DuckDBPyConnection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """One prepared INSERT for all `rows` (DuckDB's executemany), nothing for none."""
    if rows:
        con.executemany(sql, [list(row) for row in rows])


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
    patient_id, label, split, dose_kind, n_fractions, covariates, withdrawn = row
    return PatientRecord(patient_id, label, split, dose_kind, n_fractions, from_json(covariates), withdrawn)


def _record_profile(artifacts: Sequence[ArtifactRecord], profile: "str | None | _Infer") -> str | None:
    """The one profile of a record_artifacts call: the explicit one, else the one the records share."""
    found = {a.profile for a in artifacts}
    if isinstance(profile, _Infer):
        if len(found) > 1:
            raise ValueError(f"artifacts of one call must share one profile, got {sorted(map(str, found))}")
        return found.pop() if found else None
    check_profile(profile)
    if found - {profile}:
        raise ValueError(f"artifacts of profile {sorted(map(str, found))} recorded as profile {profile!r}")
    return profile


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
