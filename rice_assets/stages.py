"""The pipeline's stages in the order `rice run` materialises them."""

import dataclasses

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.preprocessing import dose_maps, raw_scans, registered_volumes


@dataclasses.dataclass(frozen=True)
class Stage:
    """Assets materialised together; `per_patient` stages run once per `patients` partition."""

    name: str
    assets: tuple[dg.AssetsDefinition, ...]
    per_patient: bool = False


STAGES: tuple[Stage, ...] = (
    Stage("cohort", (cohort_manifest,)),
    Stage("preprocessing", (raw_scans, dose_maps, registered_volumes), per_patient=True),
)
