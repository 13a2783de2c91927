"""Shared fixtures: the MNI152 template at a coarse resolution, rigid transforms, synthetic DICOM series."""

import copy
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from rice_models.imaging.brain_mask import mni_template
from rice_models.imaging.resample import resample_isotropic, resample_to_reference
from rice_models.imaging.volume import make_image

COARSE_MM = 4.0
SENTINELS = {
    "PatientName": "SENTINELNAME^QQZX",
    "PatientID": "SENTINELID-9931",
    "PatientBirthDate": "19010203",
    "InstitutionName": "SENTINEL INSTITUTE QQZX",
    "ReferringPhysicianName": "SENTINELDOC^QQZX",
    "StudyDate": "19020304",
}


def rigid_matrix(angles_deg: tuple[float, float, float], shift_mm: tuple[float, float, float]) -> np.ndarray:
    """4x4 RAS rigid transform: rotation about a point near the brain centre, then a shift."""
    centre = np.array([0.0, -18.0, 18.0])
    rot = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = centre - rot @ centre + np.asarray(shift_mm)
    return out


@pytest.fixture(scope="session")
def template_1mm() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    return mni_template()


@pytest.fixture(scope="session")
def template_coarse(template_1mm) -> nib.Nifti1Image:
    return resample_isotropic(template_1mm[0], COARSE_MM)


@pytest.fixture(scope="session")
def template_coarse_mask(template_1mm, template_coarse) -> nib.Nifti1Image:
    carried = resample_to_reference(template_1mm[1], template_coarse, order=0)
    return make_image(np.asarray(carried.dataobj) > 0, carried.affine, dtype=np.uint8)


def affine_from(
    directions: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, ...]
) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = np.asarray(directions, dtype=np.float64) * np.asarray(spacing)
    out[:3, 3] = origin
    return out


def write_mr_series(
    folder: Path,
    n_slices: int = 6,
    iop: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_gap_mm: float = 2.5,
    pixel_spacing: tuple[float, float] = (0.3, 0.45),
    slope: float = 2.0,
    intercept: float = -10.0,
    sentinels: dict[str, str] | None = None,
    seed: int = 0,
) -> list[Path]:
    """An MR series made from pydicom's MR_small.dcm: `n_slices` slices along the IOP normal, files
    written in shuffled order, each slice's pixels offset by 37 x its position index; non-square
    pixels (PixelSpacing = row spacing, column spacing)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    origin = np.array([-20.0, 35.0, 12.5])
    series_uid = generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for k in rng.permutation(n_slices):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = int(k) + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * slice_gap_mm * normal]
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = (base.pixel_array // 4 + 37 * int(k)).astype(np.int16).tobytes()
        for keyword, value in (sentinels or {}).items():
            setattr(ds, keyword, value)
        path = folder / f"IM{len(paths):04d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


@pytest.fixture
def mr_series_writer(tmp_path) -> Callable[..., Path]:
    def make(name: str = "series", **kwargs) -> Path:
        folder = tmp_path / name
        write_mr_series(folder, **kwargs)
        return folder

    return make
