"""Geometry of the synthetic scans: patient poses, scanner grids and on-disk storage layouts.

Frames: the *anatomy* frame is MNI mm (where cavities and lesions are planted). Each session's
*scanner world* frame is a rigid pose of it, `world = R (anatomy - centre) + centre + t`. Scans are
rendered on a world-axis-aligned (RAS) grid and then stored in a `StorageLayout`: axes flipped
(e.g. LPS), permuted (sagittal/coronal acquisitions) and/or with thick slices. The stored affine
always maps stored voxels to the same world mm, so the anatomy sits at the same world position
whatever the layout.
"""

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

MAX_ROTATION_DEG = 12.0  # per axis, uniform
MAX_TRANSLATION_MM = 12.0  # per axis, uniform
FOV_MARGIN_MM = 6.0  # around the posed head's bounding box
P_LPS = 1 / 3  # stored with x and y flipped (DICOM-like LPS)
P_PERMUTED = 0.2  # stored with permuted axes (sagittal or coronal slice stacks)
P_THICK_SLICES = 0.3  # anisotropic: the last stored axis has SLICE_FACTOR times the in-plane spacing
SLICE_FACTOR = 2.0
# Axis orders of non-axial acquisitions: stored axis j holds world axis order[j].
PERMUTED_ORDERS: tuple[tuple[int, int, int], ...] = ((1, 2, 0), (0, 2, 1))


def rigid_pose(rotation_deg: np.ndarray, translation_mm: np.ndarray, centre_mm: np.ndarray) -> np.ndarray:
    """4x4 anatomy -> world transform rotating about `centre_mm` then translating.

    Args:
        rotation_deg: (3,) extrinsic x, y, z rotation angles in degrees.
        translation_mm: (3,) translation.
        centre_mm: (3,) rotation centre in anatomy mm.
    """
    rotation = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = centre_mm - rotation @ centre_mm + translation_mm
    return pose


def random_pose(rng: np.random.Generator, centre_mm: np.ndarray) -> np.ndarray:
    """A random head position in the scanner (rotations and translations up to the module maxima)."""
    rotation = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, size=3)
    translation = rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, size=3)
    return rigid_pose(rotation, translation, centre_mm)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (n, 3) or (3,) points."""
    return np.asarray(points, dtype=float) @ matrix[:3, :3].T + matrix[:3, 3]


@dataclasses.dataclass(frozen=True)
class Grid:
    """A world-axis-aligned (RAS) voxel grid: voxel (i, j, k) -> world `affine @ (i, j, k, 1)`."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def zooms_mm(self) -> tuple[float, float, float]:
        """Voxel size along world x, y, z."""
        d = np.diag(self.affine)
        return float(d[0]), float(d[1]), float(d[2])

    def axis_coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World x, y, z of the voxel centres, shaped to broadcast over the grid."""
        x, y, z = (self.affine[a, 3] + self.affine[a, a] * np.arange(n) for a, n in enumerate(self.shape))
        return x[:, None, None], y[None, :, None], z[None, None, :]


def grid_covering(corners_world: np.ndarray, zooms_mm: tuple[float, float, float]) -> Grid:
    """The RAS grid of voxel size `zooms_mm` covering points (n, 3) plus FOV_MARGIN_MM.

    The origin is snapped to a multiple of the voxel size, as scanner grids are.
    """
    zooms = np.asarray(zooms_mm, dtype=float)
    lo = np.floor((corners_world.min(axis=0) - FOV_MARGIN_MM) / zooms) * zooms
    hi = corners_world.max(axis=0) + FOV_MARGIN_MM
    shape = np.ceil((hi - lo) / zooms).astype(int) + 1
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = lo
    return Grid(shape=(int(shape[0]), int(shape[1]), int(shape[2])), affine=affine)


def resample(
    volume: np.ndarray, volume_affine: np.ndarray, world_to_volume_frame: np.ndarray, grid: Grid
) -> np.ndarray:
    """Trilinear resampling of `volume` onto a world grid; 0 outside the volume.

    Args:
        volume: source array.
        volume_affine: source voxel -> source-frame mm.
        world_to_volume_frame: 4x4 world mm -> source-frame mm (the inverse pose for anatomy volumes).
        grid: target world grid.
    """
    matrix = np.linalg.inv(volume_affine) @ world_to_volume_frame @ grid.affine
    return ndimage.affine_transform(
        volume,
        matrix[:3, :3],
        matrix[:3, 3],
        output_shape=grid.shape,
        order=1,
        mode="constant",
        cval=0.0,
        output=np.float32,
    )


@dataclasses.dataclass(frozen=True)
class StorageLayout:
    """How a RAS-rendered scan is stored on disk.

    Args:
        axis_order: stored axis j holds world axis axis_order[j].
        flips: per stored axis, whether the index runs against the world axis.
        zooms_mm: voxel size along world x, y, z (the rendering grid's).
        dtype: stored data type (`float32`, or `int16` with scl_slope/scl_inter).
    """

    axis_order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    zooms_mm: tuple[float, float, float]
    dtype: str

    @property
    def orientation(self) -> str:
        """Axis codes (nibabel convention: the direction each stored axis increases towards)."""
        positive, negative = "RAS", "LPI"
        return "".join(
            (negative if f else positive)[a] for a, f in zip(self.axis_order, self.flips, strict=True)
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "orientation": self.orientation,
            "axis_order": list(self.axis_order),
            "zooms_mm": [round(z, 3) for z in self.zooms_mm],
            "dtype": self.dtype,
        }


def sample_layout(
    rng: np.random.Generator,
    spacing_mm: float,
    int16_probability: float,
    thick_slice_probability: float = P_THICK_SLICES,
) -> StorageLayout:
    """A random storage layout: LPS with P_LPS, permuted with P_PERMUTED, maybe thick slices.

    Args:
        rng: random generator.
        spacing_mm: in-plane voxel size.
        int16_probability: probability of int16 storage (else float32).
        thick_slice_probability: probability that the last stored axis has SLICE_FACTOR x spacing.
    """
    lps = bool(rng.random() < P_LPS)
    order = (0, 1, 2)
    if rng.random() < P_PERMUTED:
        order = PERMUTED_ORDERS[int(rng.integers(len(PERMUTED_ORDERS)))]
    zooms = [spacing_mm] * 3
    if rng.random() < thick_slice_probability:
        zooms[order[2]] = spacing_mm * SLICE_FACTOR
    flips = tuple(lps and world_axis in (0, 1) for world_axis in order)
    dtype = "int16" if rng.random() < int16_probability else "float32"
    return StorageLayout(
        axis_order=order,
        flips=(flips[0], flips[1], flips[2]),
        zooms_mm=(zooms[0], zooms[1], zooms[2]),
        dtype=dtype,
    )


def to_storage(data: np.ndarray, affine: np.ndarray, layout: StorageLayout) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a RAS array and its affine into `layout`; voxel -> world stays the same mapping.

    Args:
        data: array indexed along world x, y, z.
        affine: its voxel -> world affine.
        layout: the storage layout.

    Returns:
        (stored array, stored voxel -> world affine).
    """
    stored = np.transpose(data, layout.axis_order)
    out = np.eye(4)
    out[:, 3] = affine[:, 3]
    for j, world_axis in enumerate(layout.axis_order):
        column = affine[:, world_axis].copy()
        if layout.flips[j]:
            stored = np.flip(stored, axis=j)
            out[:3, 3] += (stored.shape[j] - 1) * column[:3]
            column = -column
        out[:, j] = column
    return np.ascontiguousarray(stored), out
