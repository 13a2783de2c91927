"""Occlusion sensitivity of the fold ensemble with MONAI's `OcclusionSensitivity`.

The model is any module mapping a stacked input (B, C, D, H, W) to P(RICE) of shape (B,), normally the
champion's `rice_models.ensemble.FoldEnsemble` (wrap a single fold network as `FoldEnsemble([net])`).
It is wrapped to return the two class probabilities (1 - p, p) and MONAI's own activation is switched
off (`activate=False`), so the maps follow the ensemble's probability exactly.

Sign: a map holds, per voxel, baseline P(RICE) minus P(RICE) with the voxel's neighbourhood occluded
(MONAI averages the occluded probability over every window covering the voxel). Positive = occluding
the region lowers P(RICE), the region supports RICE; negative = the region supports recurrence.

Variants:
- joint (`channel=None`): all channels occluded together in the same cube, as in the study;
- per channel: only channel c is occluded. MONAI occludes every channel of the image it is given, so
  it is given the one-channel image `x[c]` and a model that re-inserts that channel into a copy of the
  fixed original input before calling the ensemble; the other channels are never touched, and the
  occlusion value (`mean_img`, `mean_patch`) is that channel's own statistic.

Occlusion value (`mode`, MONAI's): the default 0.0 replaces the cube by zero: the brain mean of a
z-scored MRI and no dose (the dose channel is Gy / 60), i.e. "average tissue, unirradiated"; MONAI's
`gaussian` (smooth cube towards zero), `mean_patch` and `mean_img` are accepted too.

Cost: one forward pass of the ensemble per window, `n_windows(shape, mask_size, overlap)` windows per
map (stride = mask_size x (1 - overlap)), and 1 + number of channels maps per patient; both knobs come
from the caller (the profile). Seconds are measured and returned.
"""

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.visualize import OcclusionSensitivity
from scipy import ndimage
from torch import nn

from rice_models.data import IMAGE_KEY, make_item, plain_tensors, uncached_dataset
from rice_models.imaging.volume import make_image, save_nifti

OCCLUSION_MODES: tuple[str, ...] = ("gaussian", "mean_patch", "mean_img")
DEFAULT_MASK_SIZE = 4
DEFAULT_OVERLAP = 0.5
DEFAULT_MODE: float = 0.0
DEFAULT_N_BATCH = 8
PEAK_TOLERANCE = 1e-6
"""Voxels within this of the largest |drop| belong to the peak plateau (`occlusion_peak`)."""
JOINT_KEY = "all"
"""Key of the all-channels map in `OcclusionResult.maps` and its file `occlusion_all.nii.gz`."""


_MONAI_INDEXING_WARNING = "Using a non-tuple sequence for multidimensional indexing"
"""Raised by torch inside MONAI 1.6.1's occlusion code on every window; harmless, silenced there only."""


class _TwoClass(nn.Module):
    """(1 - p, p) from a module returning P(RICE) (B,)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x).reshape(x.shape[0]).float()
        return torch.stack([1.0 - p, p], dim=1)


class _ChannelReinserted(nn.Module):
    """Takes one (occluded) channel (B, 1, ...) and puts it into a copy of the fixed full input."""

    def __init__(self, model: nn.Module, image: torch.Tensor, channel: int) -> None:
        super().__init__()
        self.model = _TwoClass(model)
        self.image = image
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.image[None].repeat(x.shape[0], *([1] * self.image.ndim))
        full[:, self.channel] = x[:, 0]
        return self.model(full)


def _check_settings(
    shape: Sequence[int], mask_size: int | Sequence[int], overlap: float, mode: str | float, n_batch: int
) -> tuple[int, ...]:
    masks = (mask_size,) * len(shape) if isinstance(mask_size, int) else tuple(mask_size)
    if len(masks) != len(shape) or any(m < 1 or m > s for m, s in zip(masks, shape, strict=True)):
        raise ValueError(f"mask_size {mask_size} must be >= 1 and fit the spatial shape {tuple(shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if isinstance(mode, str) and mode not in OCCLUSION_MODES:
        raise ValueError(f"unknown occlusion mode {mode!r}; expected a float or one of {OCCLUSION_MODES}")
    if n_batch < 1:
        raise ValueError(f"n_batch must be at least 1, got {n_batch}")
    return masks


def n_windows(shape: Sequence[int], mask_size: int | Sequence[int], overlap: float) -> int:
    """Occluded windows (= ensemble forward passes) of one map, as MONAI's sliding window places them.

    Args:
        shape: spatial shape of the input.
        mask_size: occluded cube edge (voxels), one value or one per axis.
        overlap: overlap of neighbouring windows in [0, 1); stride = max(1, int(mask_size x (1 - overlap))).

    Raises:
        ValueError: a mask that does not fit the shape, or overlap outside [0, 1).
    """
    masks = _check_settings(shape, mask_size, overlap, DEFAULT_MODE, 1)
    total = 1
    for s, m in zip(shape, masks, strict=True):
        stride = max(1, int(m * (1.0 - overlap)))
        total *= math.ceil(max(s - m, 0) / stride) + 1
    return total


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_image(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim != 4:
        raise ValueError(f"expected a (C, D, H, W) image, got shape {tuple(x.shape)}")
    return x


@torch.no_grad()
def rice_probability(model: nn.Module, image: torch.Tensor | np.ndarray) -> float:
    """P(RICE) of one unoccluded (C, D, H, W) image.

    Args:
        model: returns P(RICE) (B,) for (B, C, D, H, W).
        image: the model input of one patient.
    """
    x = _check_image(image).to(_device_of(model))
    was_training = model.training
    model.eval()
    try:
        return float(model(x[None]).reshape(-1)[0])
    finally:
        model.train(was_training)


def occlusion_map(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    channel: int | None = None,
    mask_size: int | Sequence[int] = DEFAULT_MASK_SIZE,
    overlap: float = DEFAULT_OVERLAP,
    mode: str | float = DEFAULT_MODE,
    n_batch: int = DEFAULT_N_BATCH,
) -> np.ndarray:
    """Drop in P(RICE) when each region is occluded (positive = the region supports RICE).

    Args:
        model: returns P(RICE) (B,) for (B, C, D, H, W) (e.g. a `FoldEnsemble`).
        image: the model input of one patient, (C, D, H, W).
        channel: None occludes all channels together; an index occludes that channel only.
        mask_size: occluded cube edge (voxels), one value or one per axis.
        overlap: overlap of neighbouring windows in [0, 1) (sets the stride).
        mode: occlusion value: a float, or `gaussian`, `mean_patch`, `mean_img` (module docstring).
        n_batch: occluded copies per forward pass.

    Returns:
        float32 (D, H, W) map on the input's grid.

    Raises:
        ValueError: bad image, channel index or settings.
    """
    x = _check_image(image).to(_device_of(model))
    _check_settings(x.shape[1:], mask_size, overlap, mode, n_batch)
    if channel is not None and not 0 <= channel < x.shape[0]:
        raise ValueError(f"channel {channel} out of range for a {x.shape[0]}-channel image")
    baseline = rice_probability(model, x)
    wrapped = _TwoClass(model) if channel is None else _ChannelReinserted(model, x, channel)
    wrapped.training = model.training  # MONAI's eval_mode restores the wrapper's mode onto the model
    occluded = x[None] if channel is None else x[None, channel : channel + 1]
    sensitivity = OcclusionSensitivity(
        wrapped,
        mask_size=mask_size,
        n_batch=n_batch,
        verbose=False,
        mode=mode,
        overlap=overlap,
        activate=False,
    )
    with plain_tensors(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_MONAI_INDEXING_WARNING, category=UserWarning)
        occ_map, _ = sensitivity(occluded)
    p_occluded = torch.as_tensor(occ_map)[0, 1].float().cpu().numpy()
    return (baseline - p_occluded).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class OcclusionResult:
    """Occlusion maps of one patient.

    Attributes:
        baseline: P(RICE) of the unoccluded input.
        maps: `JOINT_KEY` ("all") -> the all-channels map, then channel name -> its per-channel map.
        seconds: wall time of all maps.
        n_windows: forward passes per map.
        settings: mask_size, overlap, mode, n_batch.
    """

    baseline: float
    maps: dict[str, np.ndarray]
    seconds: float
    n_windows: int
    settings: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: baseline, seconds, windows, settings, and each map's extreme drops."""
        extremes = {k: {"max": float(m.max()), "min": float(m.min())} for k, m in self.maps.items()}
        return {
            "baseline_p_rice": self.baseline,
            "seconds": self.seconds,
            "n_windows": self.n_windows,
            "settings": self.settings,
            "drop": extremes,
        }


def occlusion_maps(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    channels: Sequence[str],
    mask_size: int | Sequence[int] = DEFAULT_MASK_SIZE,
    overlap: float = DEFAULT_OVERLAP,
    mode: str | float = DEFAULT_MODE,
    n_batch: int = DEFAULT_N_BATCH,
    per_channel: bool = True,
) -> OcclusionResult:
    """The all-channels map and (optionally) one map per channel, timed.

    Args:
        model: returns P(RICE) (B,) for (B, C, D, H, W) (e.g. a `FoldEnsemble`).
        image: the model input of one patient, (C, D, H, W).
        channels: channel names of the image's channels, in order (`rice_models.channels.channels_of`).
        mask_size: occluded cube edge (voxels).
        overlap: overlap of neighbouring windows in [0, 1).
        mode: occlusion value (module docstring).
        n_batch: occluded copies per forward pass.
        per_channel: also compute one map per channel (a single-channel input gets none: it would
            equal the joint map).

    Raises:
        ValueError: channel names that do not match the image's channel count, or bad settings.
    """
    x = _check_image(image)
    if len(channels) != x.shape[0] or len(set(channels)) != len(channels) or JOINT_KEY in channels:
        raise ValueError(f"need {x.shape[0]} distinct channel names other than {JOINT_KEY!r}, got {channels}")
    settings: dict[str, Any] = {"mask_size": mask_size, "overlap": overlap, "mode": mode, "n_batch": n_batch}
    start = time.perf_counter()
    maps = {JOINT_KEY: occlusion_map(model, x, None, **settings)}
    if per_channel and len(channels) > 1:
        maps |= {name: occlusion_map(model, x, c, **settings) for c, name in enumerate(channels)}
    seconds = time.perf_counter() - start
    return OcclusionResult(
        baseline=rice_probability(model, x),
        maps=maps,
        seconds=seconds,
        n_windows=n_windows(x.shape[1:], mask_size, overlap),
        settings=settings,
    )


def occlusion_peak(occlusion: npt.ArrayLike) -> tuple[int, int, int]:
    """Voxel index at the centre of the region of largest absolute drop (either sign).

    An occlusion map is piecewise constant: every voxel of one occluded cube (or of the overlap of
    several) holds the same drop. The peak is therefore a plateau, and its first voxel in memory order
    is a corner of the cube: slices through it graze the region. This returns the voxel of the
    plateau (the connected voxels within 1e-6 of the largest |drop| that hold the first maximum)
    nearest to its centroid, so orthogonal slices cut through the middle of the peak region.

    Args:
        occlusion: a (D, H, W) map.

    Returns:
        (i, j, k), a voxel of the plateau.

    Raises:
        ValueError: not a 3D map.
    """
    m = np.abs(np.asarray(occlusion, dtype=np.float64))
    if m.ndim != 3:
        raise ValueError(f"expected a 3D map, got shape {m.shape}")
    first = np.unravel_index(int(np.argmax(m)), m.shape)
    plateau, _ = ndimage.label(m >= m[first] - PEAK_TOLERANCE)
    voxels = np.argwhere(plateau == plateau[first])
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    i, j, k = (int(v) for v in nearest)
    return i, j, k


def save_occlusion_nifti(occlusion: npt.ArrayLike, reference_affine: npt.ArrayLike, path: Path | str) -> Path:
    """Write a map as float32 NIfTI with the affine of the patient's `registered_volumes` (atomic).

    Args:
        occlusion: (D, H, W) map on the grid of the model input.
        reference_affine: 4x4 affine of the `registered_volumes` files the input was built from.
        path: destination `.nii.gz` (or `.nii`).

    Raises:
        ValueError: not 3D, a bad affine, or a wrong suffix.
    """
    return save_nifti(make_image(occlusion, reference_affine), path)


def save_occlusion_result(
    result: OcclusionResult, reference_affine: npt.ArrayLike, folder: Path | str
) -> dict[str, Path]:
    """Write every map of a result as `<folder>/occlusion_<key>.nii.gz` (`occlusion_all.nii.gz` first).

    Args:
        result: the patient's maps.
        reference_affine: 4x4 affine of the patient's `registered_volumes`.
        folder: destination folder (created if missing).
    """
    folder = Path(folder)
    return {
        key: save_occlusion_nifti(m, reference_affine, folder / f"occlusion_{key}.nii.gz")
        for key, m in result.maps.items()
    }


def load_model_input(patient_dir: Path | str, combination: str) -> torch.Tensor:
    """The (C, D, H, W) network input of one patient, built by the same transforms as training.

    Args:
        patient_dir: the patient's `registered_volumes` folder.
        combination: the combination key of the model.

    Raises:
        ValueError: unknown combination.
    """
    item = make_item("occlusion", Path(patient_dir), combination, None)
    with plain_tensors():
        data: Mapping[str, Any] = uncached_dataset([item])[0]
        return torch.as_tensor(data[IMAGE_KEY], dtype=torch.float32)
