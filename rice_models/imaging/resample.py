"""Resampling by world coordinates: every output voxel takes the source value at the same RAS point.

Values are interpolated only inside the source grid (the box spanned by its voxel centres, with a
1e-3-voxel tolerance for round-off); everything outside gets `fill`. Nothing is extrapolated, so a
dose grid that does not cover the whole head contributes zeros, not invented dose.
"""

import math

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from rice_models.imaging.volume import data_of, make_image, spacing_of

INTERPOLATION_ORDERS = (0, 1, 3)  # nearest, linear, cubic B-spline
GRID_TOLERANCE_VOXELS = 1e-3
_POINTS_PER_CHUNK = 1 << 21


def _check_order(order: int) -> None:
    if order not in INTERPOLATION_ORDERS:
        raise ValueError(f"interpolation order must be one of {INTERPOLATION_ORDERS}, got {order!r}")


def _antialias(
    data: npt.NDArray[np.float32], source_spacing: tuple[float, ...], target_spacing: float
) -> npt.NDArray[np.float32]:
    """Gaussian pre-smoothing before downsampling: sigma = (factor - 1) / 2 voxels per axis."""
    sigma = [max(0.0, (target_spacing / s - 1.0) / 2.0) for s in source_spacing]
    if max(sigma) <= 0.0:
        return data
    return np.asarray(ndimage.gaussian_filter(data, sigma=sigma, mode="nearest"), dtype=np.float32)


def sample_world(
    source: nib.Nifti1Image,
    world_points: npt.NDArray[np.float64],
    order: int = 1,
    fill: float = 0.0,
) -> npt.NDArray[np.float32]:
    """Values of `source` at RAS points (shape `(..., 3)`), `fill` outside its grid.

    Args:
        source: the image to sample.
        world_points: array of world coordinates in mm, last axis (x, y, z).
        order: 0 nearest, 1 linear, 3 cubic B-spline.
        fill: value outside the source grid.

    Raises:
        ValueError: unsupported order or points without a last axis of 3.
    """
    _check_order(order)
    pts = np.asarray(world_points, dtype=np.float64)
    if pts.shape[-1] != 3:
        raise ValueError(f"world points need a last axis of 3, got shape {pts.shape}")
    inv = np.linalg.inv(np.asarray(source.affine, dtype=np.float64))
    idx = pts.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    data = data_of(source)
    coeffs = ndimage.spline_filter(data, order=order, mode="nearest") if order > 1 else data
    return _interpolate(coeffs, idx.T, order, fill).reshape(pts.shape[:-1])


def _interpolate(
    coeffs: npt.NDArray[np.floating], idx: npt.NDArray[np.float64], order: int, fill: float
) -> npt.NDArray[np.float32]:
    """Interpolate at continuous indices `idx` (3, N); `fill` where outside the voxel-centre box."""
    upper = np.asarray(coeffs.shape, dtype=np.float64)[:, None] - 1.0
    inside = np.all((idx >= -GRID_TOLERANCE_VOXELS) & (idx <= upper + GRID_TOLERANCE_VOXELS), axis=0)
    out = np.full(idx.shape[1], fill, dtype=np.float32)
    if np.any(inside):
        out[inside] = ndimage.map_coordinates(
            coeffs, idx[:, inside], order=order, mode="nearest", prefilter=False
        )
    return out


def resample_to_reference(
    moving: nib.Nifti1Image,
    reference: nib.Nifti1Image,
    order: int = 1,
    fill: float = 0.0,
    world_transform: npt.ArrayLike | None = None,
    antialias: bool = False,
) -> nib.Nifti1Image:
    """`moving` carried onto the grid (shape and affine) of `reference` by world coordinates.

    Output voxel v takes moving's value at world point `T @ A_ref @ v`, where `T` is
    `world_transform` (identity when None): a 4x4 RAS matrix mapping reference-world points to
    moving-world points, as returned by `registration.register_rigid_affine`.

    Args:
        moving: the image to resample (any orientation and spacing).
        reference: the target grid; its voxel values are ignored.
        order: 0 nearest (masks, labels), 1 linear (dose, images), 3 cubic B-spline.
        fill: value where the point falls outside the moving grid (never extrapolated).
        world_transform: optional 4x4 reference-world -> moving-world matrix.
        antialias: Gaussian-smooth `moving` first when the reference grid is coarser (images only).

    Raises:
        ValueError: unsupported order or a transform that is not 4x4.
    """
    _check_order(order)
    t = np.eye(4) if world_transform is None else np.asarray(world_transform, dtype=np.float64)
    if t.shape != (4, 4):
        raise ValueError(f"world_transform must be a 4x4 matrix, got shape {t.shape}")
    m = np.linalg.inv(np.asarray(moving.affine, dtype=np.float64)) @ t @ np.asarray(reference.affine)
    data = data_of(moving)
    if antialias:
        ref_spacing = float(np.mean(spacing_of(reference)))
        data = _antialias(data, spacing_of(moving), ref_spacing)
    coeffs = ndimage.spline_filter(data, order=order, mode="nearest") if order > 1 else data
    shape = tuple(int(n) for n in reference.shape[:3])
    out = np.empty(shape, dtype=np.float32)
    slab = max(1, _POINTS_PER_CHUNK // max(1, shape[0] * shape[1]))
    ij = np.indices(shape[:2], dtype=np.float64).reshape(2, -1)
    for k0 in range(0, shape[2], slab):
        k1 = min(shape[2], k0 + slab)
        ks = np.arange(k0, k1, dtype=np.float64)
        vox = np.concatenate(
            [np.tile(ij, (1, ks.size)), np.repeat(ks, ij.shape[1])[None, :]], axis=0
        )  # (3, N): k slowest, then i, then j
        idx = m[:3, :3] @ vox + m[:3, 3:4]
        vals = _interpolate(coeffs, idx, order, fill)
        out[:, :, k0:k1] = vals.reshape(ks.size, shape[0], shape[1]).transpose(1, 2, 0)
    return make_image(out, reference.affine)


def isotropic_grid(img: nib.Nifti1Image, spacing_mm: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of an isotropic grid covering the field of view of `img`.

    The axis directions of `img` are kept, the number of voxels along each axis is the extent
    divided by the new spacing (rounded, at least 1), and the new grid is centred on the old one.

    Args:
        img: the source image.
        spacing_mm: new voxel size in mm (> 0).

    Raises:
        ValueError: non-positive spacing.
    """
    if not (isinstance(spacing_mm, int | float) and math.isfinite(spacing_mm) and spacing_mm > 0):
        raise ValueError(f"spacing_mm must be a positive number, got {spacing_mm!r}")
    aff = np.asarray(img.affine, dtype=np.float64)
    old_spacing = np.asarray(spacing_of(img))
    old_shape = np.asarray(img.shape[:3], dtype=np.float64)
    new_shape = np.maximum(1, np.round(old_shape * old_spacing / spacing_mm)).astype(int)
    directions = aff[:3, :3] / old_spacing
    centre = aff[:3, :3] @ ((old_shape - 1.0) / 2.0) + aff[:3, 3]
    new = np.eye(4)
    new[:3, :3] = directions * spacing_mm
    new[:3, 3] = centre - new[:3, :3] @ ((new_shape - 1.0) / 2.0)
    return (int(new_shape[0]), int(new_shape[1]), int(new_shape[2])), new


def resample_isotropic(
    img: nib.Nifti1Image, spacing_mm: float, order: int = 1, antialias: bool = True
) -> nib.Nifti1Image:
    """`img` resampled onto an isotropic grid of `spacing_mm` covering the same field of view.

    Args:
        img: the source image.
        spacing_mm: new voxel size in mm.
        order: 0 nearest (masks), 1 linear, 3 cubic B-spline.
        antialias: Gaussian pre-smoothing along axes that are downsampled (ignored for order 0).

    Raises:
        ValueError: non-positive spacing or unsupported order.
    """
    _check_order(order)
    shape, affine = isotropic_grid(img, spacing_mm)
    reference = make_image(np.zeros(shape, dtype=np.uint8), affine, dtype=np.uint8)
    return resample_to_reference(img, reference, order=order, antialias=antialias and order > 0)
