"""The pipeline's stages in the order `rice run` materialises them."""

import dataclasses

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest


@dataclasses.dataclass(frozen=True)
class Stage:
    """Assets materialised together; `per_patient` stages run once per `patients` partition."""

    name: str
    assets: tuple[dg.AssetsDefinition, ...]
    per_patient: bool = False


STAGES: tuple[Stage, ...] = (Stage("cohort", (cohort_manifest,)),)
