"""Intensity normalisation inside a brain mask, and crop/pad to a fixed shape keeping world positions."""

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import numpy.typing as npt

from rice_models.imaging.volume import data_of, make_image

OUTSIDE_MODES = ("zero", "keep")


def _mask_array(mask: nib.Nifti1Image, img: nib.Nifti1Image) -> npt.NDArray[np.bool_]:
    if mask.shape[:3] != img.shape[:3] or not np.allclose(mask.affine, img.affine, atol=1e-4):
        raise ValueError("the mask must be on the image's grid (same shape and affine)")
    return np.asarray(mask.dataobj) != 0


def zscore_in_mask(img: nib.Nifti1Image, mask: nib.Nifti1Image, outside: str = "zero") -> nib.Nifti1Image:
    """(value - mean) / sd with mean and sd taken over the finite voxels inside `mask`.

    Args:
        img: the image.
        mask: binary mask on the same grid.
        outside: `zero` sets voxels outside the mask to 0 (brain extraction, as after HD-BET),
            `keep` z-scores them with the same mean and sd.

    Raises:
        ValueError: unknown `outside`, mask on another grid, an empty mask or a constant brain.
    """
    if outside not in OUTSIDE_MODES:
        raise ValueError(f"outside must be one of {OUTSIDE_MODES}, got {outside!r}")
    inside = _mask_array(mask, img)
    data = data_of(img).astype(np.float64)
    values = data[inside & np.isfinite(data)]
    if values.size == 0:
        raise ValueError("zscore_in_mask: the mask selects no finite voxel")
    sd = float(values.std())
    if sd == 0:
        raise ValueError("zscore_in_mask: the image is constant inside the mask")
    out = (data - float(values.mean())) / sd
    if outside == "zero":
        out[~inside] = 0.0
    return make_image(out, img.affine)


def crop_start(
    shape: Sequence[int], size: Sequence[int], centre_on: nib.Nifti1Image | None = None
) -> tuple[int, int, int]:
    """First voxel index (may be negative) of a `size` window centred on the mask or the volume.

    Args:
        shape: shape of the volume being cropped.
        size: shape of the window.
        centre_on: binary mask on the volume's grid; the window is centred on the centre of its
            bounding box (the volume's centre when None or empty).
    """
    full = np.asarray(shape[:3], dtype=np.float64)
    centre = (full - 1.0) / 2.0
    if centre_on is not None:
        nz = np.argwhere(np.asarray(centre_on.dataobj) != 0)
        if nz.size:
            centre = (nz.min(axis=0) + nz.max(axis=0)) / 2.0
    start = np.floor(centre - (np.asarray(size, dtype=np.float64) - 1.0) / 2.0 + 0.5).astype(int)
    return (int(start[0]), int(start[1]), int(start[2]))


def crop_or_pad(
    img: nib.Nifti1Image,
    shape: Sequence[int],
    centre_on: nib.Nifti1Image | None = None,
    fill: float = 0.0,
    dtype: npt.DTypeLike = np.float32,
) -> nib.Nifti1Image:
    """A `shape` window of `img` (padded with `fill` where it leaves the volume), world positions kept.

    The new affine is the old one shifted to the window's first voxel, so every kept voxel stays at
    the same world (RAS) point.

    Args:
        img: the image.
        shape: output shape (3 positive integers).
        centre_on: optional binary mask on the image's grid to centre the window on (bounding-box
            centre); the volume's centre otherwise.
        fill: value of padded voxels.
        dtype: output voxel type (`np.uint8` for masks).

    Raises:
        ValueError: a bad shape or a mask on another grid.
    """
    size = tuple(int(n) for n in shape)
    if len(size) != 3 or any(n <= 0 for n in size) or any(int(n) != n for n in shape):
        raise ValueError(f"shape must be 3 positive integers, got {tuple(shape)!r}")
    if centre_on is not None:
        _mask_array(centre_on, img)
    start = crop_start(img.shape, size, centre_on)
    data = np.asarray(img.dataobj)
    out = np.full(size, fill, dtype=dtype)
    src = tuple(slice(max(0, s), min(n, s + m)) for s, m, n in zip(start, size, data.shape, strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = data[src]
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return make_image(out, affine, dtype=dtype)
