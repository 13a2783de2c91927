"""Processing profiles: every setting that changes an artifact lives here.

`quick` runs the whole pipeline on 2 CPU cores in minutes; `paper` is the RICE-NET
study's protocol (1 mm isotropic, 224^3 crop, 800 epochs) and needs a GPU.
Every artifact records `Profile.as_dict()` so a result can be traced to its settings.
"""

import dataclasses
import os
from typing import Any

DEFAULT_PROFILE_ENV = "RICE_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Settings for one run of the pipeline.

    Args:
        name: profile key (`quick` or `paper`).
        spacing_mm: isotropic voxel size of the reference grid.
        shape: crop/pad shape (voxels) of every registered volume.
        registration: ANTs transform chain used to align the event MRI to the post-op MRI.
        registration_seed: random seed for ANTs metric sampling (reproducibility).
        ncc_min: QC threshold: minimum normalised cross-correlation inside the brain mask
            between registered event MRI and post-op MRI.
        brain_volume_ml: plausible brain-mask volume range (QC).
    """

    name: str
    spacing_mm: float
    shape: tuple[int, int, int]
    registration: tuple[str, ...] = ("Rigid", "Affine")
    registration_seed: int = 42
    ncc_min: float = 0.5
    brain_volume_ml: tuple[float, float] = (800.0, 2200.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings, recorded with every artifact."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "quick": Profile(name="quick", spacing_mm=5.0, shape=(32, 32, 32)),
    "paper": Profile(name="paper", spacing_mm=1.0, shape=(224, 224, 224)),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, else `$RICE_PROFILE`, else `quick`.

    Raises:
        ValueError: the name is not a known profile.
    """
    key = name or os.environ.get(DEFAULT_PROFILE_ENV) or "quick"
    if key not in PROFILES:
        raise ValueError(f"unknown profile {key!r}; known profiles: {sorted(PROFILES)}")
    return PROFILES[key]
