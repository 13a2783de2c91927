"""Brain masks: HD-BET when its trained parameters are installed, else explicit fallbacks.

Methods (the caller records which one made a mask):

- `hd-bet`: HD-BET 2.x (an nnU-Net). Its parameters are looked up in `$RICE_HDBET_PARAMS`, else in
  `HD_BET.paths.folder_with_parameter_files` (`~/hd-bet_params/release_2.0.0`), and must hold
  `HD_BET_REQUIRED_FILES`. Nothing is ever downloaded here (the `hd-bet` command line would fetch
  them from Zenodo). Runs on CUDA when available (with test-time mirroring, as the `hd-bet` CLI),
  else on the CPU without mirroring (still minutes per 1 mm scan).
- `ants-template`: the MNI152 2009a T1 template shipped with nilearn is registered (rigid then
  affine, ANTs) to the image and its brain mask (GM + WM probability > 0.5, holes filled) is carried
  onto the image as a prior. The template is skull-stripped, so on a full-head scan the affine
  tends to stretch it over CSF and skull; the prior is therefore refined by intensity: voxels darker
  than `REFINE_FRACTION` x the Otsu threshold inside the prior (CSF, bone) are dropped, then an
  opening, the largest component, a closing and hole filling (a resection cavity stays inside).
- `otsu`: Otsu intensity threshold, opening, largest connected component, holes filled: a head
  mask rather than a brain mask, for images that are already skull-stripped.

`auto` picks `hd-bet` when its parameters are present, else `ants-template`.
"""

import functools
import importlib.util
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from rice_models.imaging.resample import _antialias, resample_isotropic, resample_to_reference
from rice_models.imaging.volume import data_of, load_nifti, make_image, save_nifti, spacing_of

MASK_METHODS = ("auto", "hd-bet", "ants-template", "otsu")
HDBET_PARAMS_ENV = "RICE_HDBET_PARAMS"
HD_BET_REQUIRED_FILES = ("dataset.json", "plans.json", "fold_all/checkpoint_final.pth")
_HD_BET_DEFAULT = Path("~/hd-bet_params/release_2.0.0")  # HD_BET.paths, hd-bet 2.0.1
TEMPLATE_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_BRAIN_PROBABILITY = 0.5  # GM + WM probability defining the template's brain
TEMPLATE_REGISTRATION_MIN_SPACING_MM = 3.0  # template registration runs on grids at least this coarse
OTSU_BINS = 256
REFINE_FRACTION = 0.6  # of the Otsu threshold inside the template prior: below it is CSF or bone


def hd_bet_parameter_folder() -> Path:
    """Where HD-BET's trained parameters are expected (`$RICE_HDBET_PARAMS` overrides HD-BET's own)."""
    override = os.environ.get(HDBET_PARAMS_ENV)
    if override:
        return Path(override).expanduser()
    try:
        from HD_BET.paths import folder_with_parameter_files

        return Path(folder_with_parameter_files)
    except ImportError:
        return _HD_BET_DEFAULT.expanduser()


def hd_bet_available() -> bool:
    """True when HD-BET is importable and all its parameter files exist (nothing is downloaded)."""
    folder = hd_bet_parameter_folder()
    if importlib.util.find_spec("HD_BET") is None:
        return False
    return all((folder / name).is_file() for name in HD_BET_REQUIRED_FILES)


def _hd_bet_mask(img: nib.Nifti1Image) -> nib.Nifti1Image:
    import torch
    from HD_BET.hd_bet_prediction import hdbet_predict
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.environ["nnUNet_compile"] = "F"
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=device.type == "cuda",  # test-time mirroring as the hd-bet CLI; off on CPU (8x slower)
        perform_everything_on_device=True,
        device=device,
        verbose=False,
        verbose_preprocessing=False,
    )
    predictor.initialize_from_trained_model_folder(str(hd_bet_parameter_folder()), "all")
    with tempfile.TemporaryDirectory(prefix="rice-hdbet-") as tmp:
        source = Path(tmp) / "image.nii.gz"
        save_nifti(img, source)
        out = Path(tmp) / "out" / "image.nii.gz"
        out.parent.mkdir()
        hdbet_predict(
            str(source), str(out), predictor, keep_brain_mask=True, compute_brain_extracted_image=False
        )
        mask = load_nifti(out.parent / "image_bet.nii.gz")
    # nnU-Net writes on the input grid; resample defensively in case of round-off in the affine
    mask = resample_to_reference(mask, img, order=0)
    return make_image(data_of(mask) > 0.5, img.affine, dtype=np.uint8)


def _template_file(name: str) -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nilearn is not installed: no MNI152 template for the brain-mask fallback")
    path = Path(spec.origin).parent / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MNI152 template file missing from the nilearn package")
    return path


@functools.cache
def _template_arrays() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    t1 = load_nifti(_template_file(TEMPLATE_T1))
    gm = data_of(load_nifti(_template_file(TEMPLATE_GM)))
    wm = data_of(load_nifti(_template_file(TEMPLATE_WM)))
    tissue = (gm + wm) / max(float(gm.max()), 1.0)
    brain = ndimage.binary_fill_holes(tissue > TEMPLATE_BRAIN_PROBABILITY)
    t1_data = data_of(t1)
    return t1_data / max(float(t1_data.max()), 1.0), brain.astype(np.uint8), np.asarray(t1.affine)


def mni_template() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """nilearn's MNI152 2009a T1 template (1 mm, skull-stripped, scaled to [0, 1]) and its brain mask."""
    t1, brain, affine = _template_arrays()
    return make_image(t1, affine), make_image(brain, affine, dtype=np.uint8)


def _template_mask(img: nib.Nifti1Image, seed: int) -> nib.Nifti1Image:
    from rice_models.imaging.registration import register_rigid_affine

    spacing = max(TEMPLATE_REGISTRATION_MIN_SPACING_MM, float(np.mean(spacing_of(img))))
    fixed = resample_isotropic(img, spacing) if spacing > min(spacing_of(img)) else img
    moving = _template_t1_at(round(spacing, 6))
    result = register_rigid_affine(fixed, moving, transforms=("Rigid", "Affine"), seed=seed)
    brain = _template_brain_for(round(float(np.mean(spacing_of(img))), 6))
    carried = resample_to_reference(brain, img, order=1, world_transform=result.fixed_to_moving)
    prior = data_of(carried) >= 0.5
    return make_image(_refine_by_intensity(data_of(img), prior), img.affine, dtype=np.uint8)


@functools.lru_cache(maxsize=4)
def _template_t1_at(spacing_mm: float) -> nib.Nifti1Image:
    """The template T1 on an isotropic grid, computed once per process and spacing."""
    return resample_isotropic(mni_template()[0], spacing_mm)


@functools.lru_cache(maxsize=4)
def _template_brain_for(target_spacing_mm: float) -> nib.Nifti1Image:
    """The template brain mask (float), anti-aliased once for carrying onto grids of this spacing."""
    _, brain = mni_template()
    return make_image(_antialias(data_of(brain), spacing_of(brain), target_spacing_mm), brain.affine)


def _largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return np.asarray(labels == (1 + int(np.argmax(sizes))))


def _refine_by_intensity(
    data: npt.NDArray[np.float32], prior: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Drop the dark (CSF, bone) voxels of a template prior; keep one closed, filled component."""
    inside = data[prior]
    if inside.size == 0 or inside.min() == inside.max():
        return prior
    tissue = prior & (data > REFINE_FRACTION * otsu_threshold(inside))
    tissue = _largest_component(ndimage.binary_opening(tissue, iterations=1))
    if not tissue.any():
        return prior
    return np.asarray(ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=2)))


def otsu_threshold(values: npt.ArrayLike, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of `values` (finite values only): maximises the between-class variance.

    Raises:
        ValueError: no finite value or a constant input.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() == v.max():
        raise ValueError("otsu_threshold needs finite, non-constant values")
    hist, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _otsu_mask(img: nib.Nifti1Image) -> nib.Nifti1Image:
    data = data_of(img)
    mask = np.nan_to_num(data, nan=0.0) > otsu_threshold(data)
    mask = ndimage.binary_opening(mask, iterations=1)
    if not mask.any():
        raise ValueError("otsu brain mask: nothing above the threshold after opening")
    mask = ndimage.binary_fill_holes(_largest_component(mask))
    return make_image(mask, img.affine, dtype=np.uint8)


def brain_mask(img: nib.Nifti1Image, method: str = "auto", seed: int = 42) -> tuple[nib.Nifti1Image, str]:
    """A binary (uint8) brain mask on the grid of `img`, and the method that made it.

    Args:
        img: a T1-weighted (contrast-enhanced) MRI.
        method: one of `MASK_METHODS`; `auto` is `hd-bet` when available, else `ants-template`.
        seed: random seed of the template registration (`ants-template`).

    Raises:
        ValueError: unknown method.
        RuntimeError: `hd-bet` requested but its parameters are not installed.
    """
    if method not in MASK_METHODS:
        raise ValueError(f"mask method must be one of {MASK_METHODS}, got {method!r}")
    if method == "auto":
        method = "hd-bet" if hd_bet_available() else "ants-template"
    if method == "hd-bet":
        if not hd_bet_available():
            raise RuntimeError(
                f"HD-BET parameters not found in {hd_bet_parameter_folder()} "
                f"(need {', '.join(HD_BET_REQUIRED_FILES)}; set ${HDBET_PARAMS_ENV} to their folder)"
            )
        return _hd_bet_mask(img), method
    if method == "ants-template":
        return _template_mask(img, seed), method
    return _otsu_mask(img), method
