"""One patient's preprocessing (`registered_volumes`): all channels on one grid in the post-op frame.

Steps, after the RICE-NET protocol:

1. post-op MRI resampled to the profile's isotropic spacing: the reference grid;
2. event MRI registered to it (the profile's ANTs chain, rigid then affine) and resampled once;
3. total dose carried onto the reference grid by world coordinates (linear, 0 outside the dose grid);
4. brain mask on the post-op MRI (HD-BET, else the template fallback; the method is recorded);
5. each MRI z-scored inside the mask (0 outside: brain-extracted);
6. every channel cropped/padded to the profile's shape, centred on the brain mask.

The dose stays in Gy.
"""

import dataclasses
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from rice_models.imaging.brain_mask import brain_mask
from rice_models.imaging.dose import dose_sanity
from rice_models.imaging.normalise import crop_or_pad, zscore_in_mask
from rice_models.imaging.registration import ncc, register_rigid_affine
from rice_models.imaging.resample import resample_isotropic, resample_to_reference
from rice_models.imaging.volume import data_of, image_geometry, save_nifti, voxel_volume_ml
from rice_models.profiles import Profile

CHANNEL_FILES = ("mri_postop", "mri_event", "dose", "brain_mask")


@dataclasses.dataclass(frozen=True)
class PreprocessResult:
    """The four volumes of `registered_volumes` (one shape, one affine) with QC and timings.

    Args:
        mri_postop: z-scored post-operative T1c MRI.
        mri_event: registered, z-scored event-time T1c MRI.
        dose: total dose in Gy.
        brain_mask: binary (uint8) brain mask.
        qc: JSON-ready quality figures (see `preprocess_patient`).
        timings: seconds per step.
    """

    mri_postop: nib.Nifti1Image
    mri_event: nib.Nifti1Image
    dose: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    qc: dict[str, Any]
    timings: dict[str, float]

    def images(self) -> dict[str, nib.Nifti1Image]:
        """The four volumes keyed by their file stem (`CHANNEL_FILES`)."""
        return {name: getattr(self, name) for name in CHANNEL_FILES}

    def save(self, folder: Path | str) -> dict[str, Path]:
        """Write `<folder>/<name>.nii.gz` for each volume, atomically; returns the paths by name."""
        folder = Path(folder)
        return {
            name: save_nifti(
                img, folder / f"{name}.nii.gz", dtype=np.uint8 if name == "brain_mask" else np.float32
            )
            for name, img in self.images().items()
        }


def _nonfinite(img: nib.Nifti1Image) -> bool:
    return not bool(np.isfinite(data_of(img)).all())


def preprocess_patient(
    postop: nib.Nifti1Image,
    event: nib.Nifti1Image,
    dose_total_gy: nib.Nifti1Image,
    profile: Profile,
    mask_method: str = "auto",
) -> PreprocessResult:
    """Bring one patient's post-op MRI, event MRI and total dose onto one cropped isotropic grid.

    QC keys: `ncc_event_postop` (inside the brain mask, after registration) and `ncc_ok`
    (>= profile.ncc_min), `brain_volume_ml` and `brain_volume_ok` (within profile.brain_volume_ml),
    `mask_method`, `nonfinite` (per channel), `dose_max_gy`, `dose_brain_coverage` (fraction of
    brain voxels inside the dose grid's non-zero region), `dose_problems` (`dose.dose_sanity`),
    `registration` (the transform), `reference_geometry` (the grid before cropping) and `geometry`.

    Args:
        postop: post-operative T1c MRI (canonical RAS), the reference frame.
        event: event-time T1c MRI.
        dose_total_gy: cumulative dose in Gy on its own grid.
        profile: processing profile (spacing, shape, registration chain and seed, QC thresholds).
        mask_method: brain-mask method (`brain_mask.MASK_METHODS`).

    Raises:
        ValueError: bad profile settings or mask method (from the steps).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[step] = round(now - t0, 3)
        t0 = now

    reference = resample_isotropic(postop, profile.spacing_mm, order=1)
    lap("resample_postop")
    registration = register_rigid_affine(
        reference, event, transforms=profile.registration, seed=profile.registration_seed
    )
    lap("register_event")
    dose = resample_to_reference(dose_total_gy, reference, order=1, fill=0.0)
    lap("resample_dose")
    mask, method = brain_mask(reference, method=mask_method, seed=profile.registration_seed)
    lap("brain_mask")
    inside = data_of(mask) > 0
    brain_ml = float(inside.sum()) * voxel_volume_ml(mask)
    similarity = ncc(reference, registration.image, mask) if inside.any() else 0.0
    postop_z = zscore_in_mask(reference, mask)
    event_z = zscore_in_mask(registration.image, mask)
    lap("zscore")
    shape = profile.shape
    out = {
        "mri_postop": crop_or_pad(postop_z, shape, centre_on=mask),
        "mri_event": crop_or_pad(event_z, shape, centre_on=mask),
        "dose": crop_or_pad(dose, shape, centre_on=mask),
        "brain_mask": crop_or_pad(mask, shape, centre_on=mask, dtype=np.uint8),
    }
    lap("crop")
    dose_data = data_of(dose)
    low, high = profile.brain_volume_ml
    qc: dict[str, Any] = {
        "ncc_event_postop": round(similarity, 6),
        "ncc_ok": bool(similarity >= profile.ncc_min),
        "brain_volume_ml": round(brain_ml, 3),
        "brain_volume_ok": bool(low <= brain_ml <= high),
        "mask_method": method,
        "nonfinite": {name: _nonfinite(img) for name, img in out.items()},
        "dose_max_gy": round(float(np.nanmax(dose_data)), 6) if dose_data.size else 0.0,
        "dose_brain_coverage": round(float((dose_data[inside] > 0).mean()), 6) if inside.any() else 0.0,
        "dose_problems": dose_sanity(dose),
        "registration": registration.as_dict(),
        "reference_geometry": image_geometry(reference),
        "geometry": image_geometry(out["mri_postop"]),
    }
    timings["total"] = round(sum(timings.values()), 3)
    return PreprocessResult(qc=qc, timings=timings, **out)
