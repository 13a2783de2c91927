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
        n_folds: cross-validation folds of the development set.
        test_fraction: share of patients held out as the test set when cohort.csv marks none.
        split_seed: seed of the fold assignment and of the test hold-out.
        epochs: training epochs per fold model.
        validation_interval: validate every this many epochs, and always after the last (1 = every
            epoch, the study's protocol). The study's best-epoch figure is the maximum over the validated
            epochs, so fewer of them also make it less optimistic (a maximum over 4 rather than 20 noisy
            scores of 13-16 patients); `quick` validates every 5th epoch (benchmarks/README.md, issue 9).
        learning_rate: Adam learning rate.
        batch_size: training batch size.
        conv1_t_stride: stride of ResNet-18's first convolution (1 = MONAI's default, 2 = ~8x cheaper).
        widen_factor: width multiplier of ResNet-18's blocks (1.0 = the study's network; `quick` uses
            0.25: the same 18 layers with 16-32-64-128 channels, ~14x cheaper a step on 2 CPU cores).
        augment: apply the study's augmentation (elastic, rotation, scaling, noise, brightness/gamma).
        train_seed: seed of weight initialisation, sampling and augmentation.
        amp: mixed precision on a GPU (ignored on the CPU).
        occlusion_mask_size: edge (voxels) of the occluded cube of occlusion maps.
        occlusion_overlap: overlap of neighbouring occlusion windows in [0, 1) (0 = stride = mask).
        ncc_refuse_below: blocking QC: an NCC below this (far under `ncc_min`) refuses the patient.
        brain_volume_refuse_ml: blocking QC: a brain-mask volume outside this range (ml) refuses it.
        dose_brain_coverage_min: blocking QC: minimum fraction of the brain mask inside the dose grid.
        event_brain_coverage_min: blocking QC: minimum fraction of the brain mask inside the event
            MRI's field of view after registration (a failed registration moves it off the brain).
        dose_high_in_brain_min: blocking QC: minimum fraction of the high-dose region (>= 50 % of the
            dose maximum) inside the brain mask grown by 10 mm (where the lesion region lies).
        planning_ct_registration: ANTs stages (Mattes mutual information) registering the post-op
            MRI to the planning CT when the dose lies in the CT's frame.
    """

    name: str
    spacing_mm: float
    shape: tuple[int, int, int]
    registration: tuple[str, ...] = ("Rigid", "Affine")
    registration_seed: int = 42
    ncc_min: float = 0.5
    brain_volume_ml: tuple[float, float] = (800.0, 2200.0)
    n_folds: int = 5
    test_fraction: float = 0.13
    split_seed: int = 2026
    epochs: int = 20
    validation_interval: int = 1
    learning_rate: float = 1e-3
    batch_size: int = 8
    conv1_t_stride: int = 2
    widen_factor: float = 1.0
    augment: bool = True
    train_seed: int = 0
    amp: bool = True
    occlusion_mask_size: int = 8
    occlusion_overlap: float = 0.0
    ncc_refuse_below: float = 0.2
    brain_volume_refuse_ml: tuple[float, float] = (400.0, 3000.0)
    dose_brain_coverage_min: float = 0.9
    event_brain_coverage_min: float = 0.9
    dose_high_in_brain_min: float = 0.5
    planning_ct_registration: tuple[str, ...] = ("Rigid",)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings, recorded with every artifact."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", spacing_mm=5.0, shape=(32, 32, 32), widen_factor=0.25, validation_interval=5
    ),
    "paper": Profile(
        name="paper",
        spacing_mm=1.0,
        shape=(224, 224, 224),
        epochs=800,
        learning_rate=1e-4,
        batch_size=2,
        conv1_t_stride=1,
        widen_factor=1.0,
        occlusion_mask_size=16,
    ),
}


def get_profile(name: str | None = None, **overrides: Any) -> Profile:
    """The profile called `name`, else `$RICE_PROFILE`, else `quick`.

    Args:
        name: profile key; None reads `$RICE_PROFILE`, then falls back to `quick`.
        **overrides: settings that replace the profile's own (e.g. from Dagster run config).

    Raises:
        ValueError: the name is not a known profile, or an override is not a profile setting.
    """
    key = name or os.environ.get(DEFAULT_PROFILE_ENV) or "quick"
    if key not in PROFILES:
        raise ValueError(f"unknown profile {key!r}; known profiles: {sorted(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown profile setting(s) {unknown}; known: {sorted(fields)}")
    return dataclasses.replace(PROFILES[key], **overrides)
