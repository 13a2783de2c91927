"""Record what an asset wrote in the catalog, with checksums, profile, code version and parents;
withdraw what a refused partition had written; refuse upstream outputs that must not be consumed.

Crash safety (README "Faults tried and survived"): a partition's files are written into a staging
folder (`staged`) and swapped in together by `record_outputs`, inside the one catalog transaction that
records them (`Catalog.atomic`), so a killed step leaves the old files with the old rows, or (killed
between the swap and the commit) new files whose checksums the rows do not match, which every
consumer refuses (`accepted_input`, `verified_inputs`) until a plain re-run replaces both.
"""

import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import dagster as dg

from data_catalog import ArtifactRecord, Catalog, ParentRef, PatientRecord, StoredArtifact
from data_catalog.records import artifact_id
from rice_assets.resources import CatalogResource
from rice_models.atomic import StagedFolder
from rice_models.landing import PatientEntry
from rice_models.paths import RicePaths
from rice_models.profiles import PROFILES, Profile
from rice_models.provenance import code_version, sha256_of
from rice_models.sources import InputError


def staged(paths: RicePaths, asset: str, partition_key: str, profile: str | None = None) -> StagedFolder:
    """A staging folder for one partition's lake files (`with staged(...) as out: save into out.dir`);
    `record_outputs(..., staged=out)` swaps it in. Leftovers of killed runs beside it are swept."""
    return StagedFolder(paths.lake_dir(asset, partition_key, profile))


def landing_relative(landing: Path, patient_id: str, path: Path) -> str:
    """A source path as the catalog records it: relative to the landing zone, `<patient_id>/<file>`.

    No absolute path (which may name a hospital share or a user) enters RICE_HOME; the patient's part
    is its catalog id (the pseudonym, when pseudonyms are on: see `rice_models.pseudonyms`).

    Raises:
        ValueError: `path` lies outside the patient's folder.
    """
    inside = Path(path).relative_to(Path(landing) / patient_id)
    return f"{patient_id}/{inside.as_posix()}" if inside.parts else patient_id


def _store(catalog: CatalogResource | Catalog) -> Catalog:
    return catalog if isinstance(catalog, Catalog) else catalog.open()


def record_outputs(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    catalog: CatalogResource | Catalog,
    asset: str,
    partition_key: str,
    files: Mapping[str, Path],
    parents: Sequence[ParentRef] | Mapping[str, Sequence[ParentRef]],
    profile: Profile | None = None,
    metadata: Mapping[str, Any] | None = None,
    staged: StagedFolder | None = None,
) -> None:
    """Replace the catalog rows of one asset partition (for the profile, if given) with `files`.

    `parents` is either one list for every file, or a list per file name. Outputs of a profile get ids
    `<asset>@<profile>/<partition>/<name>`, so another profile's outputs of the partition stay.

    With `staged`, `files` lie in its staging folder: they are recorded under their published paths
    and the folder is swapped in just before the transaction commits. Given a `Catalog` inside
    `Catalog.atomic()`, the rows join that transaction (with the asset's other catalog writes).
    """
    records = [
        ArtifactRecord(
            name=name,
            path=str(staged.path(path) if staged else path),
            sha256=sha256_of(path),
            profile=profile.name if profile else None,
            settings=profile.as_dict() if profile else None,
            code_version=code_version(),
            run_id=context.run_id,
            metadata=dict(metadata or {}),
            parents=tuple(parents[name] if isinstance(parents, Mapping) else parents),
        )
        for name, path in files.items()
    ]
    store = _store(catalog)
    with nullcontext(store) if store.in_transaction else store.atomic() as tx:
        tx.record_artifacts(asset, partition_key, records, profile=profile.name if profile else None)
        if staged is not None:
            staged.publish()


def recorded_model_version(catalog: CatalogResource | Catalog, model_id: str) -> str | None:
    """The registered version the catalog's `models` row `model_id` holds (None: no row), which the
    MLflow reconciliation keeps (`rice_models.tracking.reconcile_versions`)."""
    rows = _store(catalog).query("SELECT model_version FROM models WHERE model_id = ?", [model_id])
    return str(rows[0]["model_version"]) if rows and rows[0]["model_version"] is not None else None


def patient_record(entry: PatientEntry) -> PatientRecord:
    """The catalog row of a validated cohort.csv patient."""
    return PatientRecord(
        patient_id=entry.patient_id,
        label=entry.label,  # type: ignore[arg-type]
        split=entry.split or "dev",  # type: ignore[arg-type]
        dose_kind=entry.dose_kind,  # type: ignore[arg-type]
        n_fractions=entry.n_fractions,
        covariates=entry.covariates,
    )


def withdraw(
    catalog: CatalogResource,
    paths: RicePaths,
    partition_key: str,
    assets: Sequence[str],
    profile: str | None = None,
) -> None:
    """Remove the recorded outputs of `assets` for one partition: catalog rows and lake folder.

    Called when a partition is refused, so that no earlier output of it is left for a downstream asset
    (or `cv_splits`) to consume. Give downstream assets first. With `profile`, only that profile's
    outputs go (its `registered_volumes` refused); without, the profile-independent ones and every
    profile's (a refused source invalidates all that was made from it).
    """
    store = catalog.open()
    scopes: list[str | None] = [profile] if profile else [None, *PROFILES]
    for asset in assets:
        for scope in scopes:
            store.record_artifacts(asset, partition_key, [], profile=scope, check_parents=False)
            shutil.rmtree(paths.lake_dir(asset, partition_key, scope), ignore_errors=True)


@contextmanager
def refusing(
    catalog: CatalogResource,
    paths: RicePaths,
    partition_key: str,
    assets: Sequence[str],
    profile: str | None = None,
) -> Iterator[None]:
    """Run an asset body; if it raises, `withdraw` the partition's outputs of `assets` (of `profile`
    only, when given), then re-raise."""
    try:
        yield
    except BaseException:
        withdraw(catalog, paths, partition_key, assets, profile)
        raise


def verified_inputs(
    catalog: CatalogResource | Catalog,
    asset: str,
    partition_keys: Iterable[str],
    profile: str | None = None,
    names: Iterable[str] | None = None,
) -> list[StoredArtifact]:
    """The recorded outputs of `asset` for some partitions (of `profile`), each file re-checked.

    Every consumer reads its upstream files through this (or `accepted_input`): a file that is
    missing, or whose sha256 differs from the one recorded (a crash between a partition's swap and
    its catalog commit, a hand edit, disk damage), is refused instead of consumed.

    Args:
        catalog: the catalog.
        asset: the upstream asset.
        partition_keys: its partitions to read (patient ids, `__all__`, cell keys).
        profile: the profile of the outputs (None: profile-independent ones).
        names: only these outputs of each partition (default: all recorded).

    Raises:
        InputError: a partition without a recorded output, or a file missing or changed (names the
            patient, the file and the asset to materialise again).
    """
    store = _store(catalog)
    wanted = None if names is None else set(names)
    keys = list(partition_keys)
    recorded = store.artifacts_by_partition(asset, keys, profile=profile)  # one query for all keys
    found: list[StoredArtifact] = []
    for key in keys:
        records = [r for r in recorded.get(key, []) if wanted is None or r.name in wanted]
        rerun = f"materialise {asset} for {key} again"
        if not records or (wanted is not None and {r.name for r in records} != wanted):
            raise InputError(key, Path(asset), f"no complete recorded {asset} output; {rerun}")
        for record in records:
            path = Path(record.path) if record.path else None
            if path is None or not path.is_file() or sha256_of(path) != record.sha256:
                raise InputError(
                    key, path or Path(asset), f"the file differs from the {asset} output recorded; {rerun}"
                )
        found += records
    return found


def accepted_input(
    catalog: CatalogResource | Catalog, patient_id: str, asset: str, name: str, path: Path
) -> StoredArtifact:
    """The catalog record of an upstream output, refusing one that must not be consumed.

    Raises:
        InputError: no record (the upstream partition was refused or never materialised), a record
            without `accepted` (written without passing its blocking checks, e.g. by an earlier
            version), or a file that is missing or differs from the recorded checksum.
    """
    record = _store(catalog).get_artifact(artifact_id(asset, patient_id, name))
    rerun = f"materialise {asset} for patient {patient_id} again"
    if record is None:
        raise InputError(
            patient_id,
            path,
            f"no accepted {asset} output '{name}': that step refused this patient (see its last run) or "
            f"has not run; {rerun}",
        )
    if not record.metadata.get("accepted"):
        raise InputError(
            patient_id, path, f"the {asset} output '{name}' was recorded without passing its checks; {rerun}"
        )
    if not path.is_file() or sha256_of(path) != record.sha256:
        raise InputError(patient_id, path, f"the file differs from the {asset} output recorded; {rerun}")
    return record
