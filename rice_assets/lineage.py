"""Record what an asset wrote in the catalog, with checksums, profile, code version and parents."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from data_catalog import ArtifactRecord, ParentRef, PatientRecord
from rice_assets.resources import CatalogResource
from rice_models.landing import PatientEntry
from rice_models.profiles import Profile
from rice_models.provenance import code_version, sha256_of


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
