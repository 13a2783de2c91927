"""Record what an asset wrote in the catalog, with checksums, profile, code version and parents;
withdraw what a refused partition had written; refuse upstream outputs that must not be consumed."""

import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from data_catalog import ArtifactRecord, ParentRef, PatientRecord, StoredArtifact
from data_catalog.records import artifact_id
from rice_assets.resources import CatalogResource
from rice_models.landing import PatientEntry
from rice_models.paths import RicePaths
from rice_models.profiles import PROFILES, Profile
from rice_models.provenance import code_version, sha256_of
from rice_models.sources import InputError


def record_outputs(
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    catalog: CatalogResource,
    asset: str,
    partition_key: str,
    files: Mapping[str, Path],
    parents: Sequence[ParentRef] | Mapping[str, Sequence[ParentRef]],
    profile: Profile | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Replace the catalog rows of one asset partition (for the profile, if given) with `files`.

    `parents` is either one list for every file, or a list per file name. Outputs of a profile get ids
    `<asset>@<profile>/<partition>/<name>`, so another profile's outputs of the partition stay.
    """
    records = [
        ArtifactRecord(
            name=name,
            path=str(path),
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
    catalog.open().record_artifacts(asset, partition_key, records, profile=profile.name if profile else None)


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


def accepted_input(
    catalog: CatalogResource, patient_id: str, asset: str, name: str, path: Path
) -> StoredArtifact:
    """The catalog record of an upstream output, refusing one that must not be consumed.

    Raises:
        InputError: no record (the upstream partition was refused or never materialised), a record
            without `accepted` (written without passing its blocking checks, e.g. by an earlier
            version), or a file that is missing or differs from the recorded checksum.
    """
    record = catalog.open().get_artifact(artifact_id(asset, patient_id, name))
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
