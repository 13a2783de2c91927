"""Radiotherapy dose maps: fraction -> total dose scaling and sanity checks used by QC."""

import math

import nibabel as nib
import numpy as np

from rice_models.imaging.volume import data_of, make_image

DOSE_KINDS = ("total", "fraction")
PLAUSIBLE_MAX_GY = (1.0, 120.0)  # maximum of a cumulative brain radiotherapy dose


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and int(value) > 0


def total_dose_gy(img: nib.Nifti1Image, dose_kind: str, n_fractions: int | None = None) -> nib.Nifti1Image:
    """The cumulative dose in Gy: the file's dose x `n_fractions` for `fraction`, unchanged for `total`.

    Args:
        img: a dose map in Gy (one fraction or the whole course).
        dose_kind: `total` (the file holds the course's dose) or `fraction` (one fraction).
        n_fractions: number of fractions, a positive integer; required for `fraction`, checked but
            not used for `total`.

    Raises:
        ValueError: unknown `dose_kind`, or `n_fractions` missing (for `fraction`) or not a
            positive integer.
    """
    if dose_kind not in DOSE_KINDS:
        raise ValueError(f"dose_kind must be one of {DOSE_KINDS}, got {dose_kind!r}")
    if n_fractions is not None and not _is_positive_int(n_fractions):
        raise ValueError(f"n_fractions must be a positive integer, got {n_fractions!r}")
    if dose_kind == "fraction" and n_fractions is None:
        raise ValueError("dose_kind 'fraction' needs n_fractions (cohort.csv column `n_fractions`)")
    factor = float(n_fractions) if dose_kind == "fraction" and n_fractions is not None else 1.0
    return make_image(data_of(img) * np.float32(factor), img.affine)


def dose_sanity(img: nib.Nifti1Image, max_range_gy: tuple[float, float] = PLAUSIBLE_MAX_GY) -> list[str]:
    """Problems of a total dose map (an empty list when it looks plausible).

    Checks: non-finite values, negative values, an all-zero map, and a maximum outside
    `max_range_gy` (e.g. a dose in cGy, or one fraction mistaken for the total).

    Args:
        img: total dose map in Gy.
        max_range_gy: plausible (low, high) range of the maximum dose in Gy.

    Raises:
        ValueError: `max_range_gy` is not an increasing pair of non-negative numbers.
    """
    low, high = max_range_gy
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise ValueError(
            f"max_range_gy must be an increasing pair of non-negative numbers, got {max_range_gy!r}"
        )
    data = data_of(img)
    problems: list[str] = []
    finite = np.isfinite(data)
    if not finite.all():
        problems.append(f"{int((~finite).sum())} non-finite voxels")
    values = data[finite]
    if values.size == 0:
        return problems + ["no finite dose value"]
    if values.min() < 0:
        problems.append(f"{int((values < 0).sum())} negative voxels (min {float(values.min()):.4g} Gy)")
    peak = float(values.max())
    if peak <= 0:
        problems.append("the dose map is all zero")
    elif not low <= peak <= high:
        problems.append(f"maximum dose {peak:.4g} Gy outside the plausible range {low:g}-{high:g} Gy")
    return problems


# DoseSummationType (DICOM PS3.3 C.8.8.3): what part of the treatment an RT Dose holds.
COURSE_SUMMATIONS = ("PLAN", "MULTI_PLAN", "PLAN_OVERVIEW", "RECORD")  # the whole course
SESSION_SUMMATIONS = ("FRACTION_SESSION",)  # one session (one fraction)
# FRACTION is "one fraction group" in the standard (the group's whole delivery), yet some systems
# write it for one session's dose: the values and the cohort's covariates must decide.
AMBIGUOUS_SUMMATIONS = ("FRACTION",)
PARTIAL_SUMMATIONS = ("BEAM", "BEAM_SESSION", "BRACHY", "BRACHY_SESSION", "CONTROL_POINT")
ACCEPTED_DOSE_TYPES = ("PHYSICAL", "EFFECTIVE")  # ERROR is an uncertainty map, not a dose
PRESCRIPTION_RATIO = (0.85, 2.0)  # plausible course maximum / prescription (2.0: SRS at the 50 % line)
FRACTION_MAX_GY = (0.8, 40.0)  # plausible maximum of one fraction's dose


def dose_course_problems(
    total: nib.Nifti1Image,
    dose_kind: str,
    n_fractions: int | None = None,
    prescription_gy: float | None = None,
    summation_type: str | None = None,
    dose_type: str | None = None,
) -> list[str]:
    """Reasons the total dose is not the patient's course dose (an empty list when consistent).

    The file's own header (RT Dose `DoseSummationType`, `DoseType`) and the cohort's covariates must
    agree with `dose_kind`:

    - a partial dose (`BEAM`, `BRACHY`, `CONTROL_POINT` ...) is never a course dose;
    - `PLAN`-like summations are the course (`dose_kind=total` only); `FRACTION_SESSION` is one
      fraction (`dose_kind=fraction` only); `FRACTION` is ambiguous and needs `n_fractions` or
      `prescription_gy` to be checked against, when `dose_kind=total`;
    - `DoseType` `ERROR` (an uncertainty map) is not a dose;
    - with `prescription_gy`: the total's maximum lies within `PRESCRIPTION_RATIO` x prescription;
    - with `n_fractions`: the maximum of one fraction (total / n_fractions) lies within
      `FRACTION_MAX_GY` (a single 2 Gy fraction taken for a 30-fraction course gives 0.07 Gy).

    Args:
        total: the total dose in Gy (after fraction scaling).
        dose_kind: the cohort's `dose_kind` (`total` or `fraction`).
        n_fractions: the cohort's `n_fractions`, if given.
        prescription_gy: the cohort's `prescription_gy`, if given.
        summation_type: the RT Dose's DoseSummationType (None for a NIfTI dose or when absent).
        dose_type: the RT Dose's DoseType (None when absent).
    """
    problems: list[str] = []
    summation = (summation_type or "").strip().upper() or None
    if dose_type and dose_type.strip().upper() not in ACCEPTED_DOSE_TYPES:
        problems.append(f"DoseType {dose_type!r} is not a dose (accepted: {list(ACCEPTED_DOSE_TYPES)})")
    if summation in PARTIAL_SUMMATIONS:
        problems.append(
            f"DoseSummationType {summation}: the file holds a partial dose (some beams or applicators), "
            "not the course dose; export the plan dose (DoseSummationType PLAN)"
        )
    elif summation in COURSE_SUMMATIONS and dose_kind == "fraction":
        problems.append(
            f"DoseSummationType {summation}: the file holds the whole course, but cohort.csv says "
            f"dose_kind=fraction; multiplying it by n_fractions would overstate it (set dose_kind=total)"
        )
    elif summation in SESSION_SUMMATIONS and dose_kind == "total":
        problems.append(
            f"DoseSummationType {summation}: the file holds one fraction, but cohort.csv says "
            "dose_kind=total (set dose_kind=fraction and n_fractions)"
        )
    elif summation in AMBIGUOUS_SUMMATIONS and dose_kind == "total" and not (n_fractions or prescription_gy):
        problems.append(
            "DoseSummationType FRACTION may hold one fraction or a fraction group's whole course; with "
            "dose_kind=total, give n_fractions or prescription_gy in cohort.csv so the dose can be checked"
        )
    elif summation is not None and summation not in (
        COURSE_SUMMATIONS + SESSION_SUMMATIONS + AMBIGUOUS_SUMMATIONS
    ):
        problems.append(f"DoseSummationType {summation!r} is not a known summation type")
    data = data_of(total)
    finite = data[np.isfinite(data)]
    peak = float(finite.max()) if finite.size else 0.0
    if peak <= 0:
        return problems
    if prescription_gy:
        low, high = PRESCRIPTION_RATIO
        ratio = peak / float(prescription_gy)
        if not low <= ratio <= high:
            hint = "one fraction taken for the course?" if ratio < low else "cGy taken for Gy?"
            problems.append(
                f"maximum dose {peak:.4g} Gy is {ratio:.2f} x prescription_gy {prescription_gy:g} Gy, "
                f"outside {low:g}-{high:g} x ({hint})"
            )
    if n_fractions:
        per_fraction = peak / n_fractions
        low, high = FRACTION_MAX_GY
        if not low <= per_fraction <= high:
            if per_fraction < low:
                hint = "the file holds one fraction, not the course? (set dose_kind=fraction)"
            elif dose_kind == "fraction":
                hint = "the file holds the course, not one fraction? (set dose_kind=total), or cGy?"
            else:
                hint = "cGy taken for Gy?"
            problems.append(
                f"maximum dose {peak:.4g} Gy over {n_fractions} fractions is {per_fraction:.3g} Gy a "
                f"fraction, outside the plausible {low:g}-{high:g} Gy ({hint})"
            )
    return problems
