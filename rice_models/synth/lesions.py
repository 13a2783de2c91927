"""Resection cavity, residual tumour and the event lesion, planted in the anatomy (MNI mm) frame.

- Cavity: an ellipsoid (CSF-like) centred in lobar white matter of one hemisphere, with a thin
  enhancing rim (post-surgical) on the post-op scan, slightly shrunk and fainter at the event.
- Residual tumour (post-op only): a small solid enhancing nodule on the cavity wall.
- Event lesion, by presentation:
  * nodular (typical of recurrence): a solid, lobulated, bright nodule abutting the cavity margin;
  * diffuse (typical of RICE): a larger, dimmer, patchy "swiss-cheese" enhancement inside the
    high-dose volume, DIFFUSE_DISTANCE_RANGE_MM away from the cavity margin.
  Both carry a rim of T1-hypointense oedema.

Volumes are painted into a copy of the head model on local boxes, so both sessions of a patient
share one anatomy and differ only by what changed between them.
"""

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from rice_models.synth.anatomy import AnatomyMasks, HeadModel, mm_to_voxel, voxel_to_mm
from rice_models.synth.label_model import DIFFUSE, NODULAR

# --- cavity placement ----------------------------------------------------------------------------
CAVITY_MIN_WM = 0.6  # white-matter probability at the centre
CAVITY_MIN_LATERAL_MM = 15.0  # |x| from the midline: one hemisphere
CAVITY_Y_RANGE_MM = (-85.0, 55.0)  # lobar, anterior to the occipital pole
CAVITY_Z_RANGE_MM = (-15.0, 60.0)  # supratentorial
CAVITY_DEPTH_CLEARANCE_MM = 2.0  # brain depth at the centre >= largest semi-axis + this
CAVITY_MIN_TISSUE = 0.8  # mean parenchyma probability inside the cavity (avoid the ventricles)
CAVITY_PLACEMENT_TRIES = 60
# --- cavity appearance ---------------------------------------------------------------------------
CAVITY_INTENSITY = 0.22  # CSF-like, relative to white matter
CAVITY_EDGE_MM = 0.8
RIM_WIDTH_MM = 1.2
RIM_ENHANCEMENT_POSTOP = 0.35
RIM_ENHANCEMENT_EVENT = 0.12
EVENT_CAVITY_SHRINK_RANGE = (0.8, 1.0)
# --- residual tumour (post-op) -------------------------------------------------------------------
RESIDUAL_RADIUS_RANGE_MM = (3.5, 5.5)
RESIDUAL_INTENSITY = 1.5
# --- event lesions -------------------------------------------------------------------------------
NODULE_RADIUS_RANGE_MM = (5.0, 9.0)
NODULE_INTENSITY_RANGE = (1.45, 1.7)
NODULE_OUTWARD_OFFSET_RANGE = (0.2, 0.6)  # centre beyond the cavity wall, in nodule radii
NODULE_LOBULATION = 0.15  # amplitude of the boundary modulation (fraction of the radius)
NODULE_EDGE_MM = 0.8
DIFFUSE_RADIUS_RANGE_MM = (10.0, 16.0)
DIFFUSE_INTENSITY_RANGE = (1.25, 1.45)
DIFFUSE_DISTANCE_RANGE_MM = (10.0, 25.0)  # lesion centre to cavity margin
DIFFUSE_MIN_DOSE_FRACTION = 0.9  # of the prescription, at the lesion centre
DIFFUSE_TEXTURE_SIGMA_MM = 2.0  # grain of the swiss-cheese pattern
DIFFUSE_ENHANCING_FRACTION = 0.55  # share of the envelope that enhances
DIFFUSE_EDGE_MM = 2.5
LESION_MIN_DEPTH_MM = 3.0  # lesion centres lie this deep inside the brain
OEDEMA_EXTENT = 1.8  # oedema radius in lesion radii
OEDEMA_DEPTH = 0.12  # T1 hypointensity of oedema
PARENCHYMA_FULL_WEIGHT = 0.5  # tissue probability above which a lesion paints fully
PLACEMENT_TRIES = 400


@dataclasses.dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in anatomy mm: centre, semi-axes and the rotation of its axes."""

    centre_mm: np.ndarray
    radii_mm: np.ndarray
    rotation: np.ndarray

    def normalised_radius(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """1 on the surface, < 1 inside; x, y, z broadcastable coordinate arrays in mm."""
        b = self.rotation.T / self.radii_mm[:, None]
        d = (x - self.centre_mm[0], y - self.centre_mm[1], z - self.centre_mm[2])
        total = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)))
        for k in range(3):
            total = total + (b[k, 0] * d[0] + b[k, 1] * d[1] + b[k, 2] * d[2]) ** 2
        return np.sqrt(total)

    def surface_along(self, direction: np.ndarray) -> np.ndarray:
        """The surface point in a unit direction from the centre."""
        local = (self.rotation.T @ direction) / self.radii_mm
        return self.centre_mm + direction / np.linalg.norm(local)

    def scaled(self, factor: float) -> "Ellipsoid":
        """The same ellipsoid with semi-axes times factor."""
        return Ellipsoid(self.centre_mm, self.radii_mm * factor, self.rotation)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "centre_mm": [round(float(v), 2) for v in self.centre_mm],
            "radii_mm": [round(float(v), 2) for v in self.radii_mm],
            "rotation": [[round(float(v), 5) for v in row] for row in self.rotation],
        }


@dataclasses.dataclass(frozen=True)
class Lesion:
    """An enhancing lesion (event) or residual nodule (post-op) in anatomy mm.

    Args:
        kind: `nodular` or `diffuse`.
        centre_mm: centre.
        radius_mm: radius (nodule) or envelope radius (diffuse).
        intensity: enhancing intensity relative to white matter.
        texture_seed: seed of the lobulation / swiss-cheese texture.
        margin_distance_mm: distance from the centre to the cavity surface (post-op cavity).
        dose_gy: planned total dose at the centre (filled in by the cohort).
    """

    kind: str
    centre_mm: np.ndarray
    radius_mm: float
    intensity: float
    texture_seed: int
    margin_distance_mm: float
    dose_gy: float = float("nan")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (anatomy frame)."""
        return {
            "kind": self.kind,
            "centre_anatomy_mm": [round(float(v), 2) for v in self.centre_mm],
            "radius_mm": round(self.radius_mm, 2),
            "intensity_rel_wm": round(self.intensity, 3),
            "margin_distance_mm": round(self.margin_distance_mm, 2),
            "dose_gy": round(self.dose_gy, 2),
        }


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    return Rotation.from_quat(rng.normal(size=4)).as_matrix()


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random unit vector."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _cavity_candidates(masks: AnatomyMasks) -> tuple[np.ndarray, np.ndarray]:
    """Lobar white-matter voxel centres (n, 3) in mm and their brain depth."""
    idx = np.argwhere(masks.wm >= CAVITY_MIN_WM)
    mm = voxel_to_mm(masks.affine, idx)
    keep = (
        (np.abs(mm[:, 0]) >= CAVITY_MIN_LATERAL_MM)
        & (mm[:, 1] >= CAVITY_Y_RANGE_MM[0])
        & (mm[:, 1] <= CAVITY_Y_RANGE_MM[1])
        & (mm[:, 2] >= CAVITY_Z_RANGE_MM[0])
        & (mm[:, 2] <= CAVITY_Z_RANGE_MM[1])
    )
    depth = masks.depth_mm[tuple(idx[keep].T)]
    return mm[keep], depth


def _mean_tissue(masks: AnatomyMasks, cavity: Ellipsoid) -> float:
    box, (x, y, z) = local_box(
        masks.affine, masks.tissue.shape, cavity.centre_mm, float(cavity.radii_mm.max())
    )
    inside = cavity.normalised_radius(x, y, z) <= 1.0
    return float(masks.tissue[box][inside].mean()) if inside.any() else 0.0


def place_cavity(
    rng: np.random.Generator, masks: AnatomyMasks, radii_mm: tuple[float, float, float]
) -> Ellipsoid:
    """An ellipsoidal cavity of the given semi-axes in lobar white matter, within the parenchyma.

    Centres are drawn among CAVITY_* candidates deep enough for the cavity; the first draw whose
    cavity lies mostly in parenchyma (CAVITY_MIN_TISSUE) wins, else the most parenchymal draw.
    """
    radii = np.asarray(radii_mm, dtype=float)
    centres, depth = _cavity_candidates(masks)
    deep = depth >= radii.max() + CAVITY_DEPTH_CLEARANCE_MM
    pool = centres[deep] if deep.any() else centres[depth >= np.quantile(depth, 0.99)]
    best: tuple[float, Ellipsoid] | None = None
    for _ in range(CAVITY_PLACEMENT_TRIES):
        cavity = Ellipsoid(pool[rng.integers(len(pool))], radii, random_rotation(rng))
        tissue = _mean_tissue(masks, cavity)
        if tissue >= CAVITY_MIN_TISSUE:
            return cavity
        if best is None or tissue > best[0]:
            best = (tissue, cavity)
    assert best is not None
    return best[1]


def _deep_enough(masks: AnatomyMasks, point: np.ndarray) -> bool:
    return bool(masks.sample(masks.depth_mm, point)[0] >= LESION_MIN_DEPTH_MM)


def place_residual(rng: np.random.Generator, masks: AnatomyMasks, cavity: Ellipsoid) -> Lesion:
    """A small residual-tumour nodule centred on the cavity wall."""
    radius = float(rng.uniform(*RESIDUAL_RADIUS_RANGE_MM))
    centre = cavity.surface_along(random_direction(rng))
    for _ in range(PLACEMENT_TRIES):
        if _deep_enough(masks, centre):
            break
        centre = cavity.surface_along(random_direction(rng))
    return Lesion(NODULAR, centre, radius, RESIDUAL_INTENSITY, int(rng.integers(2**31)), 0.0)


def place_nodule(rng: np.random.Generator, masks: AnatomyMasks, cavity: Ellipsoid) -> Lesion:
    """A solid nodule abutting the cavity margin (the recurrence presentation); dose-independent."""
    radius = float(rng.uniform(*NODULE_RADIUS_RANGE_MM))
    intensity = float(rng.uniform(*NODULE_INTENSITY_RANGE))
    offset = float(rng.uniform(*NODULE_OUTWARD_OFFSET_RANGE)) * radius
    centre = cavity.centre_mm
    for _ in range(PLACEMENT_TRIES):
        direction = random_direction(rng)
        centre = cavity.surface_along(direction) + offset * direction
        if _deep_enough(masks, centre):
            break
    return Lesion(
        NODULAR, centre, radius, intensity, int(rng.integers(2**31)), surface_distance(cavity, centre)
    )


def place_diffuse(
    rng: np.random.Generator,
    masks: AnatomyMasks,
    cavity: Ellipsoid,
    relative_dose: Callable[[np.ndarray], float],
) -> Lesion:
    """A diffuse patchy lesion DIFFUSE_DISTANCE_RANGE_MM from the cavity margin in the high-dose volume.

    Args:
        rng: random generator.
        masks: anatomy maps.
        cavity: the post-op cavity.
        relative_dose: planned dose / prescription at an anatomy-mm point.

    A candidate is accepted where the relative dose is >= DIFFUSE_MIN_DOSE_FRACTION and the point is
    inside the brain; if no draw qualifies, the draw with the highest dose is used.
    """
    radius = float(rng.uniform(*DIFFUSE_RADIUS_RANGE_MM))
    intensity = float(rng.uniform(*DIFFUSE_INTENSITY_RANGE))
    best: tuple[float, np.ndarray] | None = None
    for _ in range(PLACEMENT_TRIES):
        direction = random_direction(rng)
        centre = cavity.surface_along(direction) + rng.uniform(*DIFFUSE_DISTANCE_RANGE_MM) * direction
        if not _deep_enough(masks, centre):
            continue
        dose = relative_dose(centre)
        if dose >= DIFFUSE_MIN_DOSE_FRACTION:
            best = (dose, centre)
            break
        if best is None or dose > best[0]:
            best = (dose, centre)
    chosen = best[1] if best is not None else cavity.surface_along(random_direction(rng))
    seed = int(rng.integers(2**31))
    return Lesion(DIFFUSE, chosen, radius, intensity, seed, surface_distance(cavity, chosen))


def surface_distance(cavity: Ellipsoid, point: np.ndarray) -> float:
    """Distance from a point outside the cavity to the cavity surface (mm), by dense surface sampling."""
    golden = np.pi * (3.0 - np.sqrt(5.0))
    n = 2000
    k = np.arange(n)
    zc = 1 - 2 * (k + 0.5) / n
    r = np.sqrt(1 - zc**2)
    unit = np.stack([r * np.cos(golden * k), r * np.sin(golden * k), zc], axis=1)
    surface = cavity.centre_mm + (unit * cavity.radii_mm) @ cavity.rotation.T
    inside = cavity.normalised_radius(point[0], point[1], point[2]) < 1
    distance = float(np.min(np.linalg.norm(surface - point, axis=1)))
    return -distance if inside else distance


# --- painting --------------------------------------------------------------------------------------
Coordinates = tuple[np.ndarray, np.ndarray, np.ndarray]


def local_box(
    affine: np.ndarray, shape: tuple[int, ...], centre_mm: np.ndarray, radius_mm: float
) -> tuple[tuple[slice, slice, slice], Coordinates]:
    """Slices of an axis-aligned grid around a ball, and broadcastable mm coordinates of that box."""
    step = np.diag(affine)[:3]
    lo = np.floor(mm_to_voxel(affine, centre_mm - radius_mm)).astype(int)
    hi = np.ceil(mm_to_voxel(affine, centre_mm + radius_mm)).astype(int) + 1
    lo = np.clip(lo, 0, shape[:3])
    hi = np.clip(hi, 0, shape[:3])
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    x, y, z = (affine[a, 3] + step[a] * np.arange(lo[a], hi[a]) for a in range(3))
    return box, (x[:, None, None], y[None, :, None], z[None, None, :])


def _smooth_noise(shape: tuple[int, ...], sigma_vox: float, seed: int) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), max(sigma_vox, 0.5))
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def paint_cavity(head: HeadModel, volume: np.ndarray, cavity: Ellipsoid, rim_enhancement: float) -> None:
    """Paint a CSF-like cavity with an enhancing rim into `volume` (in place)."""
    mean_radius = float(np.exp(np.log(cavity.radii_mm).mean()))
    box, (x, y, z) = local_box(
        head.affine, volume.shape, cavity.centre_mm, float(cavity.radii_mm.max()) + 6.0
    )
    signed_mm = (cavity.normalised_radius(x, y, z) - 1.0) * mean_radius  # > 0 outside
    fluid = _logistic(-signed_mm / CAVITY_EDGE_MM)
    rim = np.exp(-0.5 * ((signed_mm - RIM_WIDTH_MM) / RIM_WIDTH_MM) ** 2)
    region = volume[box]
    region[...] = region * (1 - fluid) + CAVITY_INTENSITY * fluid + rim_enhancement * rim * (1 - fluid)


def lesion_fields(
    head: HeadModel, shape: tuple[int, ...], lesion: Lesion
) -> tuple[tuple[slice, slice, slice], Coordinates, np.ndarray, np.ndarray]:
    """Enhancement and oedema weights (0..1) of a lesion on a local box of the head model grid.

    Returns:
        (box slices, box mm coordinates, enhancement, oedema).
    """
    extent = lesion.radius_mm * OEDEMA_EXTENT + 3.0
    box, (x, y, z) = local_box(head.affine, shape, lesion.centre_mm, extent)
    distance = np.sqrt(
        (x - lesion.centre_mm[0]) ** 2 + (y - lesion.centre_mm[1]) ** 2 + (z - lesion.centre_mm[2]) ** 2
    )
    box_shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    res = head.resolution_mm
    rho = distance / lesion.radius_mm
    if lesion.kind == NODULAR:
        lobes = _smooth_noise(box_shape, 0.5 * lesion.radius_mm / res, lesion.texture_seed)
        rho = rho * (1 + NODULE_LOBULATION * lobes)
        enhancement = _logistic((1 - rho) * lesion.radius_mm / NODULE_EDGE_MM)
    else:
        envelope = _logistic((1 - rho) * lesion.radius_mm / DIFFUSE_EDGE_MM)
        texture = _smooth_noise(box_shape, DIFFUSE_TEXTURE_SIGMA_MM / res, lesion.texture_seed)
        threshold = float(np.quantile(texture, 1 - DIFFUSE_ENHANCING_FRACTION))
        enhancement = envelope * _logistic((texture - threshold) / 0.15)
    oedema = np.exp(-0.5 * (distance / (OEDEMA_EXTENT * lesion.radius_mm)) ** 2)
    return box, (x, y, z), enhancement, oedema


def paint_lesion(head: HeadModel, masks: AnatomyMasks, volume: np.ndarray, lesion: Lesion) -> None:
    """Paint an enhancing lesion and its oedema into `volume` (in place), within brain parenchyma.

    Paint lesions before the cavity, so that the cavity's fluid replaces any overlap.
    """
    box, coords, enhancement, oedema = lesion_fields(head, volume.shape, lesion)
    x, y, z = np.broadcast_arrays(*coords)
    tissue = masks.sample(masks.tissue, np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)).reshape(x.shape)
    parenchyma = np.clip(tissue / PARENCHYMA_FULL_WEIGHT, 0.0, 1.0)
    region = volume[box]
    region *= 1 - OEDEMA_DEPTH * oedema * parenchyma
    weight = enhancement * parenchyma
    region[...] = region * (1 - weight) + lesion.intensity * weight
