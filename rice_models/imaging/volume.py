"""Canonical volumes: 3D float32 data in RAS+ orientation, a 4x4 voxel-to-world affine, nothing else.

Every image that leaves this package is built by `make_image`, which starts from an empty NIfTI
header: no description, database name, auxiliary file or intent name from a source file is carried
over, so a converted DICOM series cannot leak identifying text through the header.
"""

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from rice_models.paths import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SCANNER_XFORM_CODE = 1  # NIfTI "scanner anatomical" coordinates
MM3_PER_ML = 1000.0
_TEXT_FIELDS = ("descrip", "db_name", "aux_file", "intent_name")


def make_image(
    data: npt.ArrayLike, affine: npt.ArrayLike, dtype: npt.DTypeLike = np.float32
) -> nib.Nifti1Image:
    """A fresh 3D NIfTI image with an empty header apart from the geometry.

    Args:
        data: 3D voxel array, indexed (i, j, k).
        affine: 4x4 voxel-index -> world (RAS mm) matrix.
        dtype: voxel type of the stored array (float32 for images, uint8 for masks).

    Raises:
        ValueError: the data is not 3D or the affine is not a finite, invertible 4x4 matrix.
    """
    arr = np.asarray(data, dtype=dtype)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {arr.shape}")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError(f"expected a finite 4x4 affine, got {aff!r}")
    if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"the affine is singular: {aff.tolist()}")
    img = nib.Nifti1Image(arr, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(aff, code=SCANNER_XFORM_CODE)
    img.set_qform(aff, code=SCANNER_XFORM_CODE)
    for field in _TEXT_FIELDS:
        img.header[field] = b""
    return img


def data_of(img: nib.Nifti1Image) -> npt.NDArray[np.float32]:
    """The voxel array of `img` as float32 (a view when it already is float32 in memory)."""
    return np.asarray(img.dataobj, dtype=np.float32)


def canonical(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """`img` reoriented to the closest RAS+ canonical orientation, float32, with a fresh header.

    Trailing singleton dimensions (a 4D file holding one volume) are dropped.

    Args:
        img: any nibabel spatial image.

    Raises:
        ValueError: the image is not 3D after dropping trailing singleton dimensions.
    """
    shape = img.shape
    if len(shape) > 3:
        if any(n != 1 for n in shape[3:]):
            raise ValueError(f"expected one 3D volume, got shape {shape}")
        img = nib.Nifti1Image(np.asarray(img.dataobj).reshape(shape[:3]), img.affine)
    if len(img.shape) != 3:
        raise ValueError(f"expected a 3D volume, got shape {img.shape}")
    ras = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(img.dataobj), img.affine))
    return make_image(np.asarray(ras.dataobj, dtype=np.float32), ras.affine)


XFORM_DISAGREEMENT_MM = 1.0  # sform and qform placing a corner voxel further apart than this are reported


def _corner_points(shape: tuple[int, ...], affine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in shape[:3]], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ corners).T + affine[:3, 3]


def world_geometry_notes(img: nib.spatialimages.SpatialImage) -> tuple[bool, list[str]]:
    """Whether a NIfTI image says where it lies in the world, and what is odd about its geometry.

    A NIfTI image places its voxels by the sform (when `sform_code` > 0, as nibabel and the NIfTI
    standard prefer), else by the qform (`qform_code` > 0). With both codes 0 it has no world
    geometry: nibabel then falls back to voxel sizes alone, which places and orients the volume
    arbitrarily.

    Args:
        img: a loaded NIfTI-1/2 image (any other image type is taken to carry its geometry).

    Returns:
        (has_world_geometry, notes): notes report an sform and a qform that disagree by more than
        `XFORM_DISAGREEMENT_MM` at a corner of the volume (the sform is used).
    """
    header = img.header
    if not isinstance(header, nib.Nifti1Header):  # Nifti2Header subclasses it
        return True, []
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code == 0 and qform_code == 0:
        return False, []
    notes: list[str] = []
    if sform_code > 0 and qform_code > 0:
        sform = np.asarray(header.get_sform(), dtype=np.float64)
        qform = np.asarray(header.get_qform(), dtype=np.float64)
        gap = float(
            np.max(
                np.linalg.norm(_corner_points(img.shape, sform) - _corner_points(img.shape, qform), axis=1)
            )
        )
        if gap > XFORM_DISAGREEMENT_MM:
            notes.append(
                f"sform and qform disagree: a corner voxel lies {gap:.1f} mm apart between them; the sform "
                f"(code {sform_code}) is used, as the NIfTI standard says; check the export"
            )
    return True, notes


def _check_nifti_path(path: Path) -> None:
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{path}: expected a NIfTI file name ending in {' or '.join(NIFTI_SUFFIXES)}")


def load_nifti(path: Path | str, require_world_geometry: bool = False) -> nib.Nifti1Image:
    """Read a NIfTI file as a canonical (RAS+, float32, fresh header) 3D image.

    Args:
        path: a `.nii` or `.nii.gz` file.
        require_world_geometry: refuse a file whose sform_code and qform_code are both 0
            (`world_geometry_notes`); landing-zone inputs are read with True.

    Raises:
        ValueError: wrong suffix, not a single 3D volume, or no world geometry when required.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    _check_nifti_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIfTI file")
    img = nib.load(path)
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise ValueError(f"{path}: not a spatial image")
    if require_world_geometry and not world_geometry_notes(img)[0]:
        raise ValueError(
            f"{path}: the NIfTI header gives no world geometry (sform_code and qform_code are both 0), so "
            "where the image lies and which way it faces are unknown (nibabel's fallback would guess); "
            "re-export it with its geometry, or accept the guess for this patient with the cohort.csv "
            "column accept_missing_geometry=yes"
        )
    return canonical(img)


def save_nifti(img: nib.Nifti1Image, path: Path | str, dtype: npt.DTypeLike = np.float32) -> Path:
    """Write `img` atomically with a fresh header (no identifying text fields).

    Args:
        img: the image; only its voxels and affine are written.
        path: destination `.nii` or `.nii.gz` (gzip is chosen by the suffix).
        dtype: on-disk voxel type (`np.uint8` for masks).

    Returns:
        The path written.

    Raises:
        ValueError: wrong suffix.
    """
    path = Path(path)
    _check_nifti_path(path)
    out = make_image(np.asarray(img.dataobj), img.affine, dtype=dtype)
    with atomic_path(path) as tmp:
        nib.save(out, tmp)
    return path


def spacing_of(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis: the column norms of the affine."""
    s = np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0)
    return (float(s[0]), float(s[1]), float(s[2]))


def voxel_volume_ml(img: nib.Nifti1Image) -> float:
    """Volume of one voxel in millilitres."""
    return float(abs(np.linalg.det(np.asarray(img.affine)[:3, :3])) / MM3_PER_ML)


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, atol: float = 1e-4) -> bool:
    """True when `a` and `b` have the same shape and (to `atol` mm) the same affine."""
    return a.shape[:3] == b.shape[:3] and bool(np.allclose(a.affine, b.affine, atol=atol))


def image_geometry(img: nib.Nifti1Image) -> dict[str, Any]:
    """JSON-ready geometry of `img` (for the catalog): shape, spacing, axis codes, affine."""
    return {
        "shape": [int(n) for n in img.shape[:3]],
        "spacing_mm": [round(s, 6) for s in spacing_of(img)],
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
        "affine": np.round(np.asarray(img.affine, dtype=np.float64), 6).tolist(),
    }


def world_coordinates(img: nib.Nifti1Image) -> npt.NDArray[np.float64]:
    """World (RAS mm) position of every voxel centre, shape `img.shape + (3,)`."""
    idx = np.indices(img.shape[:3], dtype=np.float64)
    aff = np.asarray(img.affine, dtype=np.float64)
    return np.einsum("ij,j...->...i", aff[:3, :3], idx) + aff[:3, 3]
