"""A simulated radiotherapy plan: total dose in Gy on a grid in the anatomy frame.

Target volumes: CTV = cavity grown by the CTV margin, clipped to the intracranial hull (anatomical
barrier); PTV = CTV + PTV_MARGIN_MM. With `d` the signed distance to the PTV surface (mm, > 0
outside), the dose is::

    D(d) = D_rx * [ f(d) * (1 + HOT_SPOT * clip(-d / HOT_SPOT_DEPTH_MM, 0, 1))
                    + (1 - f(d)) * b * exp(-max(d, 0) / lambda) * (1 + BATH_MODULATION * m(x)) ]
    f(d) = Phi((d50 - d) / sigma),  d50 = PTV_EDGE_Z * sigma   (95 % of D_rx on the PTV surface)

a penumbra of width sigma and a low-dose bath (fraction b, decay length lambda, a smooth spatial
modulation m in [-1, 1] standing for beam arrangement), set to 0 outside the head.
"""

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

from rice_models.synth.anatomy import AnatomyMasks, sample_volume
from rice_models.synth.geometry import Grid
from rice_models.synth.label_model import PTV_MARGIN_MM
from rice_models.synth.lesions import Ellipsoid

PTV_EDGE_Z = 1.645  # the PTV surface receives Phi(1.645) = 95 % of the prescription
PENUMBRA_SIGMA_RANGE_MM = (3.0, 5.0)
HOT_SPOT = 0.03  # +3 % in the PTV core
HOT_SPOT_DEPTH_MM = 10.0
BATH_FRACTION_RANGE = (0.25, 0.40)
BATH_LENGTH_RANGE_MM = (20.0, 35.0)
BATH_MODULATION = 0.2
BATH_WAVELENGTH_MM = 120.0
BATH_WAVES = 3
HIGH_DOSE_FRACTION = 0.95  # V95: volume receiving >= 95 % of the prescription


@dataclasses.dataclass(frozen=True)
class DosePlan:
    """A plan's total dose in Gy on an anatomy-frame grid, with its parameters.

    Args:
        dose_gy: total dose.
        affine: voxel -> anatomy mm.
        prescription_gy: the prescription D_rx.
        penumbra_sigma_mm: sigma of the penumbra.
        bath_fraction: low-dose bath level b at the PTV edge.
        bath_length_mm: bath decay length lambda.
        ptv_cc: PTV volume (voxel count).
        v95_cc: volume receiving >= 95 % of the prescription.
    """

    dose_gy: np.ndarray
    affine: np.ndarray
    prescription_gy: float
    penumbra_sigma_mm: float
    bath_fraction: float
    bath_length_mm: float
    ptv_cc: float
    v95_cc: float

    def dose_at(self, point_mm: np.ndarray) -> float:
        """Total dose (Gy) at an anatomy-mm point."""
        return float(sample_volume(self.dose_gy, self.affine, point_mm)[0])

    def relative_dose_at(self, point_mm: np.ndarray) -> float:
        """Dose at an anatomy-mm point as a fraction of the prescription."""
        return self.dose_at(point_mm) / self.prescription_gy

    def as_dict(self) -> dict[str, object]:
        """JSON-ready parameters and dose-volume figures."""
        return {
            "prescription_gy": self.prescription_gy,
            "max_gy": round(float(self.dose_gy.max()), 2),
            "penumbra_sigma_mm": round(self.penumbra_sigma_mm, 2),
            "bath_fraction": round(self.bath_fraction, 3),
            "bath_length_mm": round(self.bath_length_mm, 1),
            "ptv_cc": round(self.ptv_cc, 1),
            "v95_cc": round(self.v95_cc, 1),
        }


def _target_distance(masks: AnatomyMasks, cavity: Ellipsoid, ctv_margin_mm: float) -> np.ndarray:
    """Signed distance (mm) to the PTV surface on the masks grid, > 0 outside."""
    spacing = float(masks.affine[0, 0])
    shape = masks.hull_distance_mm.shape
    grid = Grid(shape=(shape[0], shape[1], shape[2]), affine=masks.affine)
    inside_cavity = cavity.normalised_radius(*grid.axis_coordinates()) <= 1.0
    ctv = (ndimage.distance_transform_edt(~inside_cavity, sampling=spacing) <= ctv_margin_mm) & masks.hull
    ptv = ndimage.distance_transform_edt(~ctv, sampling=spacing) <= PTV_MARGIN_MM
    outside = ndimage.distance_transform_edt(~ptv, sampling=spacing)
    inside = ndimage.distance_transform_edt(ptv, sampling=spacing)
    return np.asarray(outside - inside, dtype=np.float32)


def _bath_modulation(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """A smooth field in [-1, 1]: the sum of BATH_WAVES random plane waves."""
    x, y, z = grid.axis_coordinates()
    total = np.zeros(grid.shape, dtype=np.float32)
    for _ in range(BATH_WAVES):
        k = rng.normal(size=3)
        k *= 2 * np.pi / BATH_WAVELENGTH_MM / np.linalg.norm(k)
        total += np.cos(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return total / BATH_WAVES


def plan_dose(
    rng: np.random.Generator,
    masks: AnatomyMasks,
    cavity: Ellipsoid,
    ctv_margin_mm: float,
    prescription_gy: float,
) -> DosePlan:
    """Simulate a plan for a cavity (module docstring) on the masks grid.

    Args:
        rng: random generator (penumbra, bath and its modulation).
        masks: anatomy maps (hull clips the CTV, head bounds the dose).
        cavity: the post-op resection cavity.
        ctv_margin_mm: cavity -> CTV margin.
        prescription_gy: total prescribed dose D_rx.
    """
    sigma = float(rng.uniform(*PENUMBRA_SIGMA_RANGE_MM))
    bath = float(rng.uniform(*BATH_FRACTION_RANGE))
    length = float(rng.uniform(*BATH_LENGTH_RANGE_MM))
    shape = masks.hull_distance_mm.shape
    grid = Grid(shape=(shape[0], shape[1], shape[2]), affine=masks.affine)
    d = _target_distance(masks, cavity, ctv_margin_mm)
    in_field = ndtr((PTV_EDGE_Z * sigma - d) / sigma)
    hot = 1 + HOT_SPOT * np.clip(-d / HOT_SPOT_DEPTH_MM, 0.0, 1.0)
    low = bath * np.exp(-np.maximum(d, 0.0) / length) * (1 + BATH_MODULATION * _bath_modulation(rng, grid))
    dose = prescription_gy * (in_field * hot + (1 - in_field) * low) * masks.head
    voxel_cc = float(masks.affine[0, 0]) ** 3 / 1000.0
    return DosePlan(
        dose_gy=dose.astype(np.float32),
        affine=masks.affine,
        prescription_gy=prescription_gy,
        penumbra_sigma_mm=sigma,
        bath_fraction=bath,
        bath_length_mm=length,
        ptv_cc=float(np.sum(d <= 0)) * voxel_cc,
        v95_cc=float(np.sum(dose >= HIGH_DOSE_FRACTION * prescription_gy)) * voxel_cc,
    )
