"""Builders of hospital-like inputs from canonical images: DICOM MR/CT series, Enhanced MR files and
RT Dose files with a chosen frame of reference, transfer syntax and summation type; NIfTI files with
chosen sform/qform codes. Everything is generated (nothing is committed or downloaded)."""

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from rice_models.imaging.volume import data_of
from tests.rice_models.imaging.conftest import encode

LPS = np.diag([-1.0, -1.0, 1.0])


def _slice_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float], np.ndarray]:
    """(row_dir, col_dir, PixelSpacing, normal) in LPS of a volume indexed (column, row, slice)."""
    a = np.asarray(affine, dtype=np.float64)
    sx, sy = np.linalg.norm(a[:3, 0]), np.linalg.norm(a[:3, 1])
    row_dir, col_dir = LPS @ a[:3, 0] / sx, LPS @ a[:3, 1] / sy
    return row_dir, col_dir, [float(sy), float(sx)], np.cross(row_dir, col_dir)


def _position(affine: np.ndarray, k: int) -> np.ndarray:
    return LPS @ (np.asarray(affine)[:3, :3] @ np.array([0.0, 0.0, k]) + np.asarray(affine)[:3, 3])


def _quantise(data: np.ndarray, intercept: float) -> tuple[np.ndarray, float]:
    span = float(np.max(np.abs(data - intercept))) or 1.0
    slope = span / 30000.0
    return np.round((data - intercept) / slope).astype(np.int16), slope


def write_series(
    img: nib.Nifti1Image,
    folder: Path,
    frame_uid: str,
    modality: str = "MR",
    syntax: str = "explicit",
    enhanced: bool = False,
) -> Path:
    """`img` (canonical) as a DICOM series: one slice per file (or one Enhanced MR file), values
    quantised to int16 with RescaleSlope (tolerance slope / 2), in `syntax`."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm" if modality == "CT" else "MR_small.dcm"))
    data = data_of(img)
    intercept = -1024.0 if modality == "CT" else 0.0
    stored, slope = _quantise(data, intercept)
    row_dir, col_dir, spacing, _ = _slice_geometry(img.affine)
    series = generate_uid()
    base.Rows, base.Columns = data.shape[1], data.shape[0]
    base.SeriesInstanceUID, base.FrameOfReferenceUID, base.Modality = series, frame_uid, modality
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 1
    base.RescaleSlope, base.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
    iop = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
    if enhanced:
        ds = copy.deepcopy(base)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.SOPClassUID = uid.EnhancedMRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.NumberOfFrames = data.shape[2]
        shared = Dataset()
        measures, plane, transform = Dataset(), Dataset(), Dataset()
        measures.PixelSpacing = [f"{v:.8f}" for v in spacing]
        plane.ImageOrientationPatient = iop
        transform.RescaleSlope, transform.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
        transform.RescaleType = "US"
        shared.PixelMeasuresSequence = Sequence([measures])
        shared.PlaneOrientationSequence = Sequence([plane])
        shared.PixelValueTransformationSequence = Sequence([transform])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        items = []
        for k in range(data.shape[2]):
            item, position = Dataset(), Dataset()
            position.ImagePositionPatient = [f"{v:.6f}" for v in _position(img.affine, k)]
            item.PlanePositionSequence = Sequence([position])
            items.append(item)
        ds.PerFrameFunctionalGroupsSequence = Sequence(items)
        ds.PixelData = np.stack([stored[:, :, k].T for k in range(data.shape[2])]).tobytes()
        encode(ds, syntax, folder / "enhanced.dcm")
        return folder
    for k in range(data.shape[2]):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = [f"{v:.6f}" for v in _position(img.affine, k)]
        ds.PixelSpacing = [f"{v:.8f}" for v in spacing]
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        encode(ds, syntax, folder / f"IM{k:04d}.dcm")
    return folder


def write_rt_dose(
    img: nib.Nifti1Image,
    path: Path,
    frame_uid: str,
    summation: str = "PLAN",
    units: str = "GY",
    dose_type: str = "PHYSICAL",
    scale: float = 1.0,
) -> Path:
    """`img` (canonical, Gy) x `scale` as an RT Dose file (uint32 with DoseGridScaling)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    data = data_of(img).astype(np.float64) * scale
    scaling = max(float(data.max()), 1e-6) / 4.0e9
    stored = np.round(np.clip(data, 0, None) / scaling).astype(np.uint32)
    row_dir, col_dir, spacing, normal = _slice_geometry(img.affine)
    positions = [_position(img.affine, k) for k in range(data.shape[2])]
    offsets = [float((p - positions[0]) @ normal) for p in positions]
    ds.Rows, ds.Columns, ds.NumberOfFrames = data.shape[1], data.shape[0], data.shape[2]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[0]]
    ds.PixelSpacing = [f"{v:.8f}" for v in spacing]
    ds.GridFrameOffsetVector = [f"{v:.6f}" for v in offsets]
    ds.DoseGridScaling = f"{scaling:.10g}"
    ds.DoseUnits, ds.DoseSummationType, ds.DoseType = units, summation, dose_type
    ds.FrameOfReferenceUID = frame_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PixelData = np.stack([stored[:, :, k].T for k in range(data.shape[2])]).tobytes()
    ds.save_as(path)
    return path


def write_nifti(
    data: np.ndarray, affine: np.ndarray, path: Path, sform_code: int = 1, qform: np.ndarray | None = None
) -> Path:
    """A NIfTI file with the given sform code (0 = none) and a qform (code 0 when `sform_code` is 0,
    else `qform` or the affine itself, code 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine if qform is None else qform, code=1 if sform_code else 0)
    nib.save(img, path)
    return path
