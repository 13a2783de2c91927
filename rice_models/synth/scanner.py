"""Acquisition of a synthetic scan: rigid pose, scanner grid, intensity non-uniformity, noise, storage.

An MR acquisition of the (lesioned) head model is::

    S(x)      = head(pose^-1 x) * exp(B(x))                  trilinear resampling, smooth bias field B
    M(x)      = sqrt((S + sigma n1)^2 + (sigma n2)^2)       Rician magnitude noise, sigma = noise * WM
    stored(x) = gain * M(x) + offset

with B a random quadratic polynomial of the world coordinates scaled to max |B| = bias amplitude.
"""

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from rice_models.paths import atomic_path
from rice_models.synth.geometry import Grid, StorageLayout, resample, to_storage

GAIN_RANGE = (300.0, 1500.0)  # stored units per white-matter intensity
OFFSET_RANGE = (0.0, 10.0)
BIAS_AMPLITUDE_RANGE = (0.05, 0.15)  # max |log bias| over the field of view
NOISE_FRACTION_RANGE = (0.02, 0.05)  # Rician sigma relative to white matter
BIAS_TERMS = 9  # x, y, z, x^2, y^2, z^2, xy, xz, yz
FILE_MODE = 0o644  # landing files are readable by the pipeline's other users


@dataclasses.dataclass(frozen=True)
class ScannerEffects:
    """Per-acquisition intensity effects (module docstring)."""

    gain: float
    offset: float
    bias_amplitude: float
    bias_coefficients: tuple[float, ...]
    noise_fraction: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "gain": round(self.gain, 2),
            "offset": round(self.offset, 2),
            "bias_amplitude": round(self.bias_amplitude, 4),
            "noise_fraction": round(self.noise_fraction, 4),
        }


def sample_effects(rng: np.random.Generator) -> ScannerEffects:
    """Random gain, offset, bias field and noise level of one acquisition."""
    return ScannerEffects(
        gain=float(rng.uniform(*GAIN_RANGE)),
        offset=float(rng.uniform(*OFFSET_RANGE)),
        bias_amplitude=float(rng.uniform(*BIAS_AMPLITUDE_RANGE)),
        bias_coefficients=tuple(float(c) for c in rng.normal(size=BIAS_TERMS)),
        noise_fraction=float(rng.uniform(*NOISE_FRACTION_RANGE)),
    )


def bias_field(grid: Grid, effects: ScannerEffects) -> np.ndarray:
    """Multiplicative bias exp(B) on the grid; B quadratic in coordinates normalised to [-1, 1]."""
    axes = []
    for coordinate in grid.axis_coordinates():
        lo, hi = float(coordinate.min()), float(coordinate.max())
        axes.append((coordinate - (lo + hi) / 2) / max((hi - lo) / 2, 1e-6))
    x, y, z = axes
    terms = (x, y, z, x**2 - 1 / 3, y**2 - 1 / 3, z**2 - 1 / 3, x * y, x * z, y * z)
    log_bias = np.zeros(grid.shape, dtype=np.float32)
    for coefficient, term in zip(effects.bias_coefficients, terms, strict=True):
        log_bias += np.float32(coefficient) * term.astype(np.float32)
    log_bias *= effects.bias_amplitude / max(float(np.abs(log_bias).max()), 1e-6)
    return np.exp(log_bias)


def acquire_mri(
    rng: np.random.Generator,
    head: np.ndarray,
    head_affine: np.ndarray,
    pose: np.ndarray,
    grid: Grid,
    effects: ScannerEffects,
) -> np.ndarray:
    """Render a posed head model on a scanner grid with bias field, Rician noise, gain and offset.

    Args:
        rng: random generator (noise).
        head: the session's head model (WM = 1) in the anatomy frame.
        head_affine: its voxel -> anatomy mm.
        pose: 4x4 anatomy -> scanner world of this session.
        grid: the scanner's RAS grid.
        effects: intensity effects.

    Returns:
        float32 array on `grid` in scanner units (integer-valued, as reconstructed magnitudes are).
    """
    signal = resample(head, head_affine, np.linalg.inv(pose), grid) * bias_field(grid, effects)
    sigma = np.float32(effects.noise_fraction)
    real = signal + sigma * rng.standard_normal(grid.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(grid.shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    return np.round(np.float32(effects.gain) * magnitude + np.float32(effects.offset)).astype(np.float32)


def write_nifti(path: Path, data: np.ndarray, grid: Grid, layout: StorageLayout, description: str) -> None:
    """Store a RAS-rendered array in `layout` as NIfTI (atomically), scanner-anatomical sform/qform.

    Args:
        path: destination (`.nii.gz`).
        data: array on `grid` (indexed along world x, y, z).
        grid: its grid.
        layout: storage layout; `int16` data get scl_slope/scl_inter chosen by nibabel.
        description: header `descrip` text (at most 80 characters).
    """
    stored, affine = to_storage(data, grid.affine, layout)
    image = nib.Nifti1Image(stored.astype(np.float32), affine)
    image.header.set_data_dtype(np.dtype(layout.dtype))
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = description[:80].encode()
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
        tmp.chmod(FILE_MODE)
