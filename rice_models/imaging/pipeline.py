"""One patient's preprocessing (`registered_volumes`): all channels on one grid in the post-op frame.

Steps, after the RICE-NET protocol:

1. post-op MRI resampled to the profile's isotropic spacing: the reference grid;
2. event MRI registered to it (the profile's ANTs chain, rigid then affine) and resampled once;
3. total dose carried onto the reference grid by world coordinates (linear, 0 outside the dose grid);
   when the dose lies in the planning CT's frame, the reference is first registered to the CT
   (ANTs, Mattes mutual information) and the dose carried through that transform;
4. brain mask on the post-op MRI (HD-BET, else the template fallback; the method is recorded);
5. each MRI z-scored inside the mask (0 outside: brain-extracted);
6. every channel cropped/padded to the profile's shape, centred on the brain mask.

The dose stays in Gy. `blocking_problems` turns the QC figures into the reasons a patient is refused
(the dose grid misses the brain, an all-zero dose, a registration far below the threshold, an
implausible brain volume), each naming its likely cause.
"""

import dataclasses
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from rice_models.imaging.brain_mask import brain_mask
from rice_models.imaging.dose import dose_sanity
from rice_models.imaging.normalise import crop_or_pad, zscore_in_mask
from rice_models.imaging.registration import RegistrationResult, ncc, register_rigid_affine
from rice_models.imaging.resample import resample_isotropic, resample_to_reference
from rice_models.imaging.volume import data_of, image_geometry, make_image, save_nifti, voxel_volume_ml
from rice_models.profiles import Profile

CHANNEL_FILES = ("mri_postop", "mri_event", "dose", "brain_mask")
HIGH_DOSE_LEVEL = 0.5  # the high-dose region: >= 50 % of the dose maximum
HIGH_DOSE_MARGIN_MM = 10.0  # the brain mask grown by this much bounds where the high dose may lie
CT_FLOOR_HU = -1000.0  # CT values are shifted to >= 0 before ANTs (its centre-of-mass start weighs them)


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


class RegistrationFailed(RuntimeError):
    """ANTs could not register one input to the post-op MRI.

    Args:
        channel: the moving input, `mri_event` or `planning_ct`.
        cause: ANTs' message.
    """

    def __init__(self, channel: str, cause: str) -> None:
        self.channel = channel
        super().__init__(f"ANTs could not register the {channel} to the post-op MRI ({cause.strip()[-300:]})")


def _register(
    channel: str, fixed: nib.Nifti1Image, moving: nib.Nifti1Image, transforms: tuple[str, ...], seed: int
) -> RegistrationResult:
    try:
        return register_rigid_affine(fixed, moving, transforms=transforms, seed=seed)
    except RuntimeError as err:
        raise RegistrationFailed(channel, str(err)) from err


def _field_of_view(
    image: nib.Nifti1Image, reference: nib.Nifti1Image, world_transform: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.bool_]:
    """Voxels of `reference` that fall inside `image`'s grid (through `world_transform`)."""
    ones = make_image(np.ones(image.shape[:3], dtype=np.float32), image.affine)
    return (
        data_of(resample_to_reference(ones, reference, order=0, fill=0.0, world_transform=world_transform))
        > 0
    )


def _flat(img: nib.Nifti1Image, inside: npt.NDArray[np.bool_]) -> bool:
    """True when the image has no spread inside the brain (blank scan, or registered out of the head)."""
    values = data_of(img)[inside]
    values = values[np.isfinite(values)]
    return values.size == 0 or float(values.std()) == 0.0


def _zscore_unless_flat(img: nib.Nifti1Image, mask: nib.Nifti1Image, flat: bool) -> nib.Nifti1Image:
    """`zscore_in_mask`, or zeros for a flat image, which `blocking_problems` then refuses by name."""
    if flat:
        return make_image(np.zeros(img.shape[:3], dtype=np.float32), img.affine)
    return zscore_in_mask(img, mask)


def _ct_for_registration(ct: nib.Nifti1Image) -> nib.Nifti1Image:
    """The CT with air at 0 (HU - CT_FLOOR_HU, clipped at 0): mutual information is unchanged, and
    ANTs' intensity-weighted centre-of-mass start is not thrown by negative values."""
    return make_image(np.clip(data_of(ct) - np.float32(CT_FLOOR_HU), 0.0, None), ct.affine)


def _dose_figures(
    dose: nib.Nifti1Image,
    covered: npt.NDArray[np.bool_],
    inside: np.ndarray,
    source_max: float,
    spacing_mm: float,
) -> dict[str, Any]:
    """Coverage of the brain by the dose grid and where the high dose lies (QC keys, see below)."""
    dose_data = data_of(dose)
    peak = float(np.nanmax(dose_data)) if dose_data.size else 0.0
    high = dose_data >= HIGH_DOSE_LEVEL * source_max if source_max > 0 else np.zeros_like(inside)
    grown = ndimage.binary_dilation(inside, iterations=max(1, int(np.ceil(HIGH_DOSE_MARGIN_MM / spacing_mm))))
    return {
        "dose_max_gy": round(peak, 6),
        "dose_source_max_gy": round(source_max, 6),
        "dose_grid_brain_coverage": round(float(covered[inside].mean()), 6) if inside.any() else 0.0,
        "dose_brain_coverage": round(float((dose_data[inside] > 0).mean()), 6) if inside.any() else 0.0,
        "dose_high_in_brain": round(float(grown[high].mean()), 6) if high.any() else 0.0,
        "dose_high_carried": round(peak / source_max, 6) if source_max > 0 else 0.0,
    }


def preprocess_patient(
    postop: nib.Nifti1Image,
    event: nib.Nifti1Image,
    dose_total_gy: nib.Nifti1Image,
    profile: Profile,
    mask_method: str = "auto",
    planning_ct: nib.Nifti1Image | None = None,
) -> PreprocessResult:
    """Bring one patient's post-op MRI, event MRI and total dose onto one cropped isotropic grid.

    QC keys: `ncc_event_postop` (inside the brain mask, after registration) and `ncc_ok`
    (>= profile.ncc_min), `brain_volume_ml` and `brain_volume_ok` (within profile.brain_volume_ml),
    `mask_method`, `nonfinite` (per channel), `flat_in_brain` (the MRIs constant inside the brain
    mask, whose channel is then zeros), `event_grid_brain_coverage` (fraction of brain voxels inside
    the registered event MRI's field of view), `dose_max_gy` (on the reference grid),
    `dose_source_max_gy` (of the dose file), `dose_grid_brain_coverage` (fraction of brain voxels
    inside the dose grid), `dose_brain_coverage` (fraction of brain voxels with dose > 0),
    `dose_high_in_brain` (fraction of the >= 50 %-of-maximum region inside the brain mask grown by
    10 mm), `dose_high_carried` (reference-grid maximum / file maximum), `dose_problems`
    (`dose.dose_sanity`), `dose_frame` (`coordinates` or `planning_ct`), `registration` (the event
    transform), `planning_ct_registration` (the MRI -> CT transform, when used),
    `reference_geometry` (the grid before cropping) and `geometry`.

    Args:
        postop: post-operative T1c MRI (canonical RAS), the reference frame.
        event: event-time T1c MRI.
        dose_total_gy: cumulative dose in Gy on its own grid (in the post-op MRI's world, or in the
            planning CT's when `planning_ct` is given).
        profile: processing profile (spacing, shape, registration chain and seed, QC thresholds).
        mask_method: brain-mask method (`brain_mask.MASK_METHODS`).
        planning_ct: the planning CT (HU), in the dose's frame, when the dose is not in the MRI's.

    Raises:
        ValueError: bad profile settings or mask method (from the steps).
        RegistrationFailed: ANTs failed on the event MRI or the planning CT (the channel is named).
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
    registration = _register("mri_event", reference, event, profile.registration, profile.registration_seed)
    lap("register_event")
    to_dose: np.ndarray | None = None
    ct_registration = None
    if planning_ct is not None:
        ct_registration = _register(
            "planning_ct",
            reference,
            _ct_for_registration(planning_ct),
            profile.planning_ct_registration,
            profile.registration_seed,
        )
        to_dose = ct_registration.fixed_to_moving
        lap("register_planning_ct")
    dose = resample_to_reference(dose_total_gy, reference, order=1, fill=0.0, world_transform=to_dose)
    grid = _field_of_view(dose_total_gy, reference, to_dose)
    lap("resample_dose")
    mask, method = brain_mask(reference, method=mask_method, seed=profile.registration_seed)
    lap("brain_mask")
    inside = data_of(mask) > 0
    event_fov = _field_of_view(event, reference, registration.fixed_to_moving)
    brain_ml = float(inside.sum()) * voxel_volume_ml(mask)
    similarity = ncc(reference, registration.image, mask) if inside.any() else 0.0
    flat = [
        name
        for name, img in (("mri_postop", reference), ("mri_event", registration.image))
        if _flat(img, inside)
    ]
    postop_z = _zscore_unless_flat(reference, mask, "mri_postop" in flat)
    event_z = _zscore_unless_flat(registration.image, mask, "mri_event" in flat)
    lap("zscore")
    shape = profile.shape
    out = {
        "mri_postop": crop_or_pad(postop_z, shape, centre_on=mask),
        "mri_event": crop_or_pad(event_z, shape, centre_on=mask),
        "dose": crop_or_pad(dose, shape, centre_on=mask),
        "brain_mask": crop_or_pad(mask, shape, centre_on=mask, dtype=np.uint8),
    }
    lap("crop")
    source = data_of(dose_total_gy)
    source_max = float(np.nanmax(source)) if source.size else 0.0
    low, high = profile.brain_volume_ml
    qc: dict[str, Any] = {
        "ncc_event_postop": round(similarity, 6),
        "ncc_ok": bool(similarity >= profile.ncc_min),
        "brain_volume_ml": round(brain_ml, 3),
        "brain_volume_ok": bool(low <= brain_ml <= high),
        "mask_method": method,
        "nonfinite": {name: _nonfinite(img) for name, img in out.items()},
        "flat_in_brain": flat,
        "event_grid_brain_coverage": round(float(event_fov[inside].mean()), 6) if inside.any() else 0.0,
        **_dose_figures(dose, grid, inside, source_max, profile.spacing_mm),
        "dose_problems": dose_sanity(dose),
        "dose_frame": "planning_ct" if ct_registration is not None else "coordinates",
        "registration": registration.as_dict(),
        "reference_geometry": image_geometry(reference),
        "geometry": image_geometry(out["mri_postop"]),
    }
    if ct_registration is not None:
        qc["planning_ct_registration"] = ct_registration.as_dict()
    timings["total"] = round(sum(timings.values()), 3)
    return PreprocessResult(qc=qc, timings=timings, **out)


BLOCKING_CHANNELS = ("dose", "mri_event", "mri_postop")


def blocking_problems(qc: dict[str, Any], profile: Profile) -> list[tuple[str, str]]:
    """The reasons the QC figures of `preprocess_patient` refuse the patient, as (channel, reason).

    The channel names the input most likely at fault (the reason names the likely cause). Blocking:
    the dose grid covers less than `profile.dose_brain_coverage_min` of the brain; the dose is all
    zero (or not finite) on the MRI's grid; its high-dose region lies outside the brain (less than
    `profile.dose_high_in_brain_min` inside the brain mask grown by 10 mm, or the file's maximum not
    reached on the MRI's grid); the registered event MRI covers less than
    `profile.event_brain_coverage_min` of the brain; the registration NCC is below
    `profile.ncc_refuse_below`; the brain volume is outside `profile.brain_volume_refuse_ml`; an MRI
    is constant inside the brain mask; a channel has NaN or Inf.

    Args:
        qc: the `qc` of a `PreprocessResult`.
        profile: the profile whose thresholds apply.
    """
    out: list[tuple[str, str]] = []
    frame = (
        "the dose is in another frame of reference than the post-op MRI (e.g. the planning CT's: add "
        "planning_ct/), or the dose's or the MRI's header geometry is wrong"
        if qc.get("dose_frame") != "planning_ct"
        else "the post-op MRI was not registered to the planning CT correctly, or the CT is not this dose's"
    )
    coverage, wanted = qc["dose_grid_brain_coverage"], profile.dose_brain_coverage_min
    if coverage < wanted:
        reason = f"the dose grid covers {coverage:.0%} of the brain (minimum {wanted:.0%})"
        out.append(("dose", f"{reason}: likely {frame}, or the dose grid was cropped"))
    high_in, carried = qc["dose_high_in_brain"], qc["dose_high_carried"]
    if qc["dose_problems"]:
        out.append(("dose", f"on the MRI's grid: {'; '.join(qc['dose_problems'])}: likely {frame}"))
    elif high_in < profile.dose_high_in_brain_min or carried < 0.9:
        reason = (
            f"the high-dose region lies outside the brain ({high_in:.0%} of it within "
            f"{HIGH_DOSE_MARGIN_MM:g} mm of the brain mask, minimum {profile.dose_high_in_brain_min:.0%}; "
            f"{carried:.0%} of the dose maximum reached on the MRI's grid)"
        )
        out.append(("dose", f"{reason}: likely {frame}"))
    event_coverage = qc.get("event_grid_brain_coverage", 1.0)
    if event_coverage < profile.event_brain_coverage_min:
        out.append(
            (
                "mri_event",
                f"the registered event MRI covers {event_coverage:.0%} of the brain (minimum "
                f"{profile.event_brain_coverage_min:.0%}): likely a failed registration (another "
                "patient's or sequence's scan, or a wrong header geometry), or a scan that does not "
                "cover the head",
            )
        )
    if qc["ncc_event_postop"] < profile.ncc_refuse_below:
        out.append(
            (
                "mri_event",
                f"the registered event MRI does not match the post-op MRI (NCC {qc['ncc_event_postop']:.3f}, "
                f"refused below {profile.ncc_refuse_below}): likely another patient's or another "
                "sequence's scan, or a header geometry so wrong that registration failed",
            )
        )
    low, high = profile.brain_volume_refuse_ml
    if not low <= qc["brain_volume_ml"] <= high:
        out.append(
            (
                "mri_postop",
                f"brain mask of {qc['brain_volume_ml']:.0f} ml by {qc['mask_method']} (refused outside "
                f"{low:.0f}-{high:.0f} ml): likely a wrong voxel size in the header, a scan that does not "
                "cover the head, or a failed brain extraction",
            )
        )
    for channel in qc.get("flat_in_brain", []):
        out.append(
            (
                channel,
                f"the {'registered event' if channel == 'mri_event' else 'post-op'} MRI is constant inside "
                "the brain mask: likely a blank scan, or a registration that moved it out of the head",
            )
        )
    bad = [name for name, flag in qc["nonfinite"].items() if flag]
    if bad:
        out.append(("mri_postop", f"NaN or Inf in {bad} after preprocessing: a damaged input"))
    return out
