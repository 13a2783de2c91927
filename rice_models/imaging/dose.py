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
