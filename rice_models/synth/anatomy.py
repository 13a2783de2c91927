"""Real anatomy for the synthetic cohort: nilearn's MNI152 (ICBM 2009a symmetric) T1 template.

The template shipped inside the nilearn package is skull-stripped, so a head is built around it:
sulcal CSF up to a smoothed brain hull, then a dark skull and a bright (fat) scalp. Intensities are
normalised so that white matter is 1.0 (a T1-weighted contrast: WM > GM > CSF). The anatomy frame is
MNI millimetres; every patient's scans are rigid poses of it.

Two cached products: `load_masks()` (tissue probabilities, brain depth and the intracranial hull on
a MASK_RESOLUTION_MM grid, used to place lesions and plan dose) and `load_head_model(spacing_mm)`
(the T1 head on a grid fine enough to render scans of that voxel size).

Nothing is downloaded: the files come from `Path(nilearn.__file__).parent / "datasets/data"`.
"""

import dataclasses
import functools
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

TEMPLATE_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
PROBABILITY_SCALE = 255.0  # the GM/WM maps are stored as uint8 probabilities

WM_CORE_PROBABILITY = 0.9  # voxels defining the white-matter reference intensity
MASK_RESOLUTION_MM = 2.0
HULL_SMOOTH_SIGMA_MM = 4.0  # smoothing of the brain mask that closes the sulci
HULL_LEVEL = 0.3
CSF_INTENSITY = 0.25  # relative to white matter
CSF_LAYER_MM = 1.5  # subarachnoid CSF outside the hull, then skull, then scalp
SKULL_LAYER_MM = 5.0
SCALP_LAYER_MM = 4.0
SCALP_END_MM = CSF_LAYER_MM + SKULL_LAYER_MM + SCALP_LAYER_MM
SKULL_INTENSITY = 0.08
SCALP_INTENSITY = 0.8
SHELL_EDGE_MM = 0.7  # softness of the tissue boundaries of the shell
CROP_MARGIN_MM = SCALP_END_MM + 3.0  # kept around the brain's bounding box
ANTI_ALIAS_SIGMA_PER_SPACING = 0.35  # Gaussian sigma (mm) per output-voxel mm applied to the model
MIN_MODEL_RESOLUTION_MM = 1.0


def template_dir() -> Path:
    """Folder of the MNI152 files inside the installed nilearn package.

    Raises:
        FileNotFoundError: nilearn is installed without its bundled template.
    """
    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    if not (folder / TEMPLATE_T1).is_file():
        raise FileNotFoundError(f"MNI152 template {TEMPLATE_T1} not found in {folder}")
    return folder


def voxel_to_mm(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Apply a voxel -> mm affine to (n, 3) or (3,) indices."""
    return np.asarray(ijk, dtype=float) @ affine[:3, :3].T + affine[:3, 3]


def mm_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Apply the inverse of a voxel -> mm affine to (n, 3) or (3,) points."""
    inverse = np.linalg.inv(affine)
    return np.asarray(xyz, dtype=float) @ inverse[:3, :3].T + inverse[:3, 3]


def sample_volume(
    volume: np.ndarray, affine: np.ndarray, points_mm: np.ndarray, order: int = 1
) -> np.ndarray:
    """Values of a volume (voxel -> mm `affine`) at points (n, 3) in mm; 0 outside the grid."""
    vox = mm_to_voxel(affine, np.atleast_2d(points_mm))
    return ndimage.map_coordinates(volume, vox.T, order=order, mode="constant", cval=0.0)


@dataclasses.dataclass(frozen=True)
class Template:
    """The MNI152 template cropped around the head: T1 (WM = 1), GM and WM probabilities, 1 mm."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray


@dataclasses.dataclass(frozen=True)
class AnatomyMasks:
    """Tissue maps in the anatomy (MNI mm) frame on a MASK_RESOLUTION_MM grid.

    Args:
        wm: white-matter probability.
        tissue: grey + white matter probability (brain parenchyma).
        depth_mm: distance to the brain surface inside the brain, 0 outside.
        hull_distance_mm: signed distance to the intracranial hull (brain + sulcal CSF), < 0 inside.
        affine: voxel -> anatomy mm.
    """

    wm: np.ndarray
    tissue: np.ndarray
    depth_mm: np.ndarray
    hull_distance_mm: np.ndarray
    affine: np.ndarray

    @property
    def hull(self) -> np.ndarray:
        """The intracranial volume (clips the CTV)."""
        return self.hull_distance_mm <= 0

    @property
    def head(self) -> np.ndarray:
        """Everything inside the scalp surface (the dose is 0 outside)."""
        return self.hull_distance_mm <= SCALP_END_MM

    @property
    def centre_mm(self) -> np.ndarray:
        """Centroid of the intracranial volume (the rotation centre of patient poses)."""
        return voxel_to_mm(self.affine, np.argwhere(self.hull).mean(axis=0))

    def head_corners_mm(self) -> np.ndarray:
        """The 8 corners (8, 3) of the head's bounding box in anatomy mm."""
        idx = np.argwhere(self.head)
        lo, hi = idx.min(axis=0), idx.max(axis=0)
        corners = np.array(
            [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
        )
        return voxel_to_mm(self.affine, corners)

    def sample(self, volume: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
        """Linear interpolation of one of these maps at anatomy-mm points (n, 3)."""
        return sample_volume(volume, self.affine, points_mm)


@dataclasses.dataclass(frozen=True)
class HeadModel:
    """The T1-weighted head (white matter = 1, air = 0) on an isotropic anatomy-frame grid."""

    t1: np.ndarray
    affine: np.ndarray

    @property
    def resolution_mm(self) -> float:
        """Isotropic voxel size."""
        return float(self.affine[0, 0])


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    image = nib.nifti1.load(template_dir() / name)
    return np.asarray(image.dataobj, dtype=np.float32), np.asarray(image.affine, dtype=float)


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The template, cropped to the brain's bounding box + CROP_MARGIN_MM (cached)."""
    t1, affine = _load(TEMPLATE_T1)
    gm, _ = _load(TEMPLATE_GM)
    wm, _ = _load(TEMPLATE_WM)
    gm /= PROBABILITY_SCALE
    wm /= PROBABILITY_SCALE
    t1 /= float(np.median(t1[wm > WM_CORE_PROBABILITY]))
    idx = np.argwhere(t1 > 0)
    margin = int(np.ceil(CROP_MARGIN_MM / affine[0, 0]))
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, t1.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    cropped = affine.copy()
    cropped[:3, 3] = voxel_to_mm(affine, lo)
    return Template(t1=t1[box].copy(), gm=gm[box].copy(), wm=wm[box].copy(), affine=cropped)


def _regrid(volume: np.ndarray, affine: np.ndarray, resolution: float, sigma_mm: float) -> np.ndarray:
    """Smooth by sigma_mm and resample onto an isotropic `resolution` grid sharing voxel 0's centre."""
    source = float(affine[0, 0])
    if sigma_mm > 0:
        volume = ndimage.gaussian_filter(volume, sigma_mm / source)
    step = resolution / source
    if np.isclose(step, 1.0):
        return volume.astype(np.float32, copy=False)
    shape = tuple(int(np.floor((n - 1) / step)) + 1 for n in volume.shape)
    return ndimage.affine_transform(
        volume, np.diag([step] * 3), order=1, output_shape=shape, output=np.float32
    )


def _regrid_affine(affine: np.ndarray, resolution: float) -> np.ndarray:
    out = affine.copy()
    out[:3, :3] = np.diag([resolution] * 3)
    return out


def _soft_step(distance_mm: np.ndarray, edge_mm: float) -> np.ndarray:
    """0 -> 1 as distance_mm crosses 0 with a logistic edge."""
    return 1.0 / (1.0 + np.exp(-np.clip(distance_mm / edge_mm, -30, 30)))


@functools.lru_cache(maxsize=1)
def load_masks() -> AnatomyMasks:
    """Tissue maps on the MASK_RESOLUTION_MM grid (cached)."""
    template = load_template()
    res = MASK_RESOLUTION_MM
    sigma = ANTI_ALIAS_SIGMA_PER_SPACING * res
    brain = _regrid((template.t1 > 0).astype(np.float32), template.affine, res, sigma) > 0.5
    hull = ndimage.gaussian_filter(brain.astype(np.float32), HULL_SMOOTH_SIGMA_MM / res) > HULL_LEVEL
    hull |= brain
    signed = ndimage.distance_transform_edt(~hull, sampling=res) - ndimage.distance_transform_edt(
        hull, sampling=res
    )
    return AnatomyMasks(
        wm=_regrid(template.wm, template.affine, res, sigma),
        tissue=np.clip(_regrid(template.gm + template.wm, template.affine, res, sigma), 0.0, 1.0),
        depth_mm=ndimage.distance_transform_edt(brain, sampling=res).astype(np.float32),
        hull_distance_mm=signed.astype(np.float32),
        affine=_regrid_affine(template.affine, res),
    )


def _shell_intensity(outside_mm: np.ndarray) -> np.ndarray:
    """CSF, skull and scalp layers as a function of the distance outside the hull."""
    skull = _soft_step(outside_mm - CSF_LAYER_MM, SHELL_EDGE_MM)
    scalp = _soft_step(outside_mm - CSF_LAYER_MM - SKULL_LAYER_MM, SHELL_EDGE_MM)
    air = _soft_step(outside_mm - SCALP_END_MM, SHELL_EDGE_MM)
    layers = (
        CSF_INTENSITY * (1 - skull) + SKULL_INTENSITY * skull + (SCALP_INTENSITY - SKULL_INTENSITY) * scalp
    )
    return layers * (1 - air)


def model_resolution(spacing_mm: float) -> float:
    """Resolution of the head model used to render scans of voxel size `spacing_mm`."""
    return max(MIN_MODEL_RESOLUTION_MM, spacing_mm / 2.0)


@functools.lru_cache(maxsize=2)
def load_head_model(spacing_mm: float) -> HeadModel:
    """The T1 head for rendering scans with voxels of `spacing_mm` (cached per process).

    The model has voxels of `model_resolution(spacing_mm)` and is smoothed by
    ANTI_ALIAS_SIGMA_PER_SPACING * spacing_mm so that rendering at `spacing_mm` does not alias.
    Brain voxels keep the template's intensities; partial-volume voxels at the brain surface blend
    into sulcal CSF; outside the hull come the CSF, skull and scalp layers.

    Args:
        spacing_mm: the voxel size of the scans that will be rendered from it.
    """
    template = load_template()
    masks = load_masks()
    res = model_resolution(spacing_mm)
    sigma = ANTI_ALIAS_SIGMA_PER_SPACING * spacing_mm
    affine = _regrid_affine(template.affine, res)
    brain = np.clip(_regrid((template.t1 > 0).astype(np.float32), template.affine, res, sigma), 0.0, 1.0)
    t1 = _regrid(template.t1, template.affine, res, sigma)
    t1 = np.where(brain > 0.05, t1 / np.maximum(brain, 0.05), 0.0)  # undo the blur into the background
    to_mask_vox = np.linalg.inv(masks.affine) @ affine
    outside = ndimage.affine_transform(
        masks.hull_distance_mm,
        to_mask_vox[:3, :3],
        to_mask_vox[:3, 3],
        output_shape=t1.shape,
        order=1,
        mode="nearest",
    )
    intracranial = brain * t1 + (1 - brain) * CSF_INTENSITY
    head = np.where(outside <= 0, intracranial, _shell_intensity(outside))
    return HeadModel(t1=head.astype(np.float32), affine=affine)
