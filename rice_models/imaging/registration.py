"""Linear registration with ANTs (antspyx) and the NCC used by registration QC.

Coordinates. nibabel affines map voxel indices to RAS mm; ITK/ANTs physical space is LPS. An image
goes to ANTs with origin `F @ t`, direction `F @ R / spacing` (F = diag(-1, -1, 1)); ANTs transforms
(fixed LPS point -> moving LPS point) come back as 4x4 RAS matrices `F4 @ M_lps @ F4`.

Reproducibility. ANTs samples the metric at random points; the seed is passed to antsRegistration
(`--random-seed`). With ITK's default of 2 threads (set by `_ants` when ANTs first loads, unless the
environment says otherwise) repeated runs agree to ~1e-4 mm, not bit for bit; export
ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 before the first registration for bit-identical results (about
2x slower).
"""

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from rice_models.imaging.resample import resample_isotropic, resample_to_reference
from rice_models.imaging.volume import data_of, make_image, spacing_of
from rice_models.process import freeze_imported_objects

LINEAR_TRANSFORMS = ("Translation", "Rigid", "Similarity", "Affine")
_FLIP3 = np.diag([-1.0, -1.0, 1.0])
_FLIP4 = np.diag([-1.0, -1.0, 1.0, 1.0])
_SEED_LOCK = threading.Lock()  # ants.config holds the seed in a module global


def _ants() -> ModuleType:
    """ANTsPy, imported on first use, with ITK's thread count set before ITK loads.

    Importing it takes about 1.5 s on 2 cores (it loads matplotlib, statsmodels and scipy.stats), and
    every Dagster run process loads the definitions: only the runs that register pay it. Its objects
    are frozen out of garbage collection once loaded (`rice_models.process`).
    """
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")
    import ants
    import ants.config

    freeze_imported_objects()
    return ants


def to_ants(img: nib.Nifti1Image) -> Any:
    """A nibabel image as an `ants.ANTsImage` (float32) at the same physical position.

    Args:
        img: 3D image with an affine free of shear.
    """
    aff = np.asarray(img.affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    direction = _FLIP3 @ (aff[:3, :3] / spacing)
    origin = _FLIP3 @ aff[:3, 3]
    return _ants().from_numpy(
        np.ascontiguousarray(data_of(img)),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def from_ants(image: Any) -> nib.Nifti1Image:
    """An `ants.ANTsImage` (3D) as a nibabel image with a RAS affine."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.direction, dtype=np.float64) * np.asarray(image.spacing, dtype=np.float64)
    lps[:3, 3] = np.asarray(image.origin, dtype=np.float64)
    return make_image(image.numpy(), _FLIP4 @ lps)


def read_ants_linear_transform(path: Path | str) -> npt.NDArray[np.float64]:
    """An ITK/ANTs linear transform file as a 4x4 RAS matrix (fixed world -> moving world).

    Args:
        path: a `.mat` (or `.txt`) ITK affine-family transform.
    """
    tx = _ants().read_transform(str(path))
    params = np.asarray(tx.parameters, dtype=np.float64)
    centre = np.asarray(tx.fixed_parameters, dtype=np.float64)
    if params.size != 12 or centre.size != 3:
        raise ValueError(f"{path}: not a 3D linear transform ({params.size} parameters)")
    matrix = params[:9].reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = params[9:] + centre - matrix @ centre
    return _FLIP4 @ lps @ _FLIP4


@dataclasses.dataclass(frozen=True)
class RegistrationResult:
    """The moving image on the fixed grid, and the transform that put it there.

    Args:
        image: moving image resampled onto the fixed image's grid.
        fixed_to_moving: 4x4 RAS matrix mapping a fixed-world point to the moving-world point
            whose value it takes (pass it as `world_transform` to `resample_to_reference`).
        transforms: the ANTs stages run, in order.
        seed: the random seed of the metric sampling.
    """

    image: nib.Nifti1Image
    fixed_to_moving: npt.NDArray[np.float64]
    transforms: tuple[str, ...]
    seed: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (no image)."""
        return {
            "transforms": list(self.transforms),
            "seed": self.seed,
            "fixed_to_moving_ras": np.round(self.fixed_to_moving, 8).tolist(),
            "translation_mm": float(np.linalg.norm(self.fixed_to_moving[:3, 3])),
        }


def _check_transforms(transforms: Sequence[str]) -> tuple[str, ...]:
    stages = tuple(transforms)
    if not stages:
        raise ValueError("transforms must name at least one stage")
    unknown = [t for t in stages if t not in LINEAR_TRANSFORMS]
    if unknown:
        raise ValueError(f"unsupported transforms {unknown}; supported: {LINEAR_TRANSFORMS}")
    return stages


def _remove(paths: Any) -> None:
    for p in paths if isinstance(paths, list) else [paths]:
        if isinstance(p, str) and p:
            Path(p).unlink(missing_ok=True)


def register_rigid_affine(
    fixed: nib.Nifti1Image,
    moving: nib.Nifti1Image,
    transforms: Sequence[str] = ("Rigid", "Affine"),
    seed: int = 42,
    order: int = 1,
    match_resolution: bool = True,
) -> RegistrationResult:
    """Align `moving` to `fixed` with a chain of ANTs linear stages (Mattes MI, multi-resolution).

    The first stage starts from ANTs' centre-of-mass alignment, each later stage from the previous
    result; the returned matrix is the composition. A moving image finer than the fixed grid is
    first brought (anti-aliased, on its own field of view) to the fixed grid's spacing: on coarse
    grids this is faster and markedly more accurate (ANTs then compares like with like). The moving
    image is finally resampled once from its original voxels, by world coordinates
    (`resample_to_reference`, anti-aliased), zero outside its field of view.

    Args:
        fixed: the reference image (its grid is the output grid).
        moving: the image to align.
        transforms: ANTs stages, each one of `LINEAR_TRANSFORMS`, e.g. ("Rigid", "Affine").
        seed: random seed of ANTs' metric sampling.
        order: interpolation order of the final resampling (0, 1 or 3).
        match_resolution: bring a finer moving image to the fixed spacing before ANTs.

    Raises:
        ValueError: empty or unsupported transforms, or a non-integer seed.
        RuntimeError: ANTs failed.
    """
    stages = _check_transforms(transforms)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    fixed_spacing = float(np.mean(spacing_of(fixed)))
    coarser = match_resolution and min(spacing_of(moving)) < 0.9 * fixed_spacing
    fixed_a = to_ants(fixed)
    moving_a = to_ants(resample_isotropic(moving, fixed_spacing) if coarser else moving)
    previous: list[str] | None = None
    matrix = np.eye(4)
    ants = _ants()
    with _SEED_LOCK:
        saved = ants.config._random_seed
        ants.config._random_seed = int(seed)
        try:
            for stage in stages:
                out = ants.registration(
                    fixed_a, moving_a, type_of_transform=stage, initial_transform=previous
                )
                _remove(previous or [])
                previous = [out["fwdtransforms"][0]]
                matrix = read_ants_linear_transform(previous[0])
                _remove([p for p in out["invtransforms"] if p not in previous])
        finally:
            ants.config._random_seed = saved
            _remove(previous or [])
    registered = resample_to_reference(
        moving, fixed, order=order, world_transform=matrix, antialias=order > 0
    )
    return RegistrationResult(image=registered, fixed_to_moving=matrix, transforms=stages, seed=int(seed))


def ncc(
    a: nib.Nifti1Image | npt.ArrayLike,
    b: nib.Nifti1Image | npt.ArrayLike,
    mask: nib.Nifti1Image | npt.ArrayLike | None = None,
) -> float:
    """Normalised cross-correlation (Pearson r) of two images on one grid, inside `mask`.

    Args:
        a: image or array.
        b: image or array of the same shape.
        mask: optional boolean/0-1 image or array of the same shape; voxels where it is non-zero
            (and both images are finite) are compared.

    Returns:
        r in [-1, 1]; 0.0 when either image is constant over the compared voxels.

    Raises:
        ValueError: shapes differ, or images on different grids, or no voxel to compare.
    """
    if isinstance(a, nib.Nifti1Image) and isinstance(b, nib.Nifti1Image):
        if not (a.shape == b.shape and np.allclose(a.affine, b.affine, atol=1e-4)):
            raise ValueError("ncc needs both images on the same grid")
    x = np.asarray(a.dataobj if isinstance(a, nib.Nifti1Image) else a, dtype=np.float64)
    y = np.asarray(b.dataobj if isinstance(b, nib.Nifti1Image) else b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ncc needs arrays of one shape, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    if mask is not None:
        m = np.asarray(mask.dataobj if isinstance(mask, nib.Nifti1Image) else mask)
        if m.shape != x.shape:
            raise ValueError(f"mask shape {m.shape} differs from image shape {x.shape}")
        keep &= m != 0
    if not keep.any():
        raise ValueError("ncc: no voxel to compare (empty mask)")
    xv, yv = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
    denom = float(np.sqrt((xv * xv).sum() * (yv * yv).sum()))
    return float((xv * yv).sum() / denom) if denom > 0 else 0.0
