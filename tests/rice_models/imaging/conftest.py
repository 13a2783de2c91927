"""Shared fixtures: the MNI152 template at a coarse resolution, rigid transforms, synthetic DICOM series."""

import copy
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
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


SYNTAXES = ("explicit", "implicit", "big", "deflate", "rle", "jpeg-lossless", "jpeg-ls", "j2k", "no-meta")


GDCM_COMPRESSORS = {"jpeg-lossless": ("JPEG", uid.JPEGLosslessSV1), "j2k": ("JPEG2000", uid.JPEG2000Lossless)}


def gdcm_encoded(pixels: np.ndarray, syntax: str = "jpeg-lossless") -> bytes:
    """`pixels` (rows, cols, int16) encoded by GDCM (SimpleITK's DICOM writer) as JPEG Lossless SV1
    (1.2.840.10008.1.2.4.70) or JPEG 2000 lossless, returned as encapsulated Pixel Data."""
    compressor, expected = GDCM_COMPRESSORS[syntax]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "jpeg.dcm"
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(out))
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
        writer.Execute(sitk.GetImageFromArray(pixels[np.newaxis].astype(np.int16)))
        encoded = pydicom.dcmread(out)
    assert encoded.file_meta.TransferSyntaxUID == expected
    return encoded.PixelData


def encode(ds: Dataset, syntax: str, path: Path) -> None:
    """Save `ds` (uncompressed, explicit VR little endian) in `syntax` (one of SYNTAXES)."""
    if syntax in ("rle", "jpeg-ls"):
        ds.compress({"rle": uid.RLELossless, "jpeg-ls": uid.JPEGLSLossless}[syntax])
    elif syntax in GDCM_COMPRESSORS:
        frames = ds.pixel_array.reshape((-1, int(ds.Rows), int(ds.Columns)))
        ds.PixelData = pydicom.encaps.encapsulate(
            [
                next(pydicom.encaps.generate_frames(gdcm_encoded(f, syntax), number_of_frames=1))
                for f in frames
            ]
        )
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.file_meta.TransferSyntaxUID = GDCM_COMPRESSORS[syntax][1]
    elif syntax == "big":
        ds.PixelData = ds.pixel_array.astype(">i2").tobytes()
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRBigEndian
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False)
        return
    elif syntax in ("implicit", "deflate"):
        ds.file_meta.TransferSyntaxUID = {
            "implicit": uid.ImplicitVRLittleEndian,
            "deflate": uid.DeflatedExplicitVRLittleEndian,
        }[syntax]
    elif syntax == "no-meta":
        ds.file_meta = FileMetaDataset()
        ds.preamble = None
        pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
        return
    elif syntax != "explicit":
        raise ValueError(syntax)
    ds.save_as(path)


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
    syntax: str = "explicit",
    frame_of_reference: str | None = None,
) -> list[Path]:
    """An MR series made from pydicom's MR_small.dcm: `n_slices` slices along the IOP normal, files
    written in shuffled order, each slice's pixels offset by 37 x its position index; non-square
    pixels (PixelSpacing = row spacing, column spacing); saved in transfer syntax `syntax`."""
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
        if frame_of_reference is not None:
            ds.FrameOfReferenceUID = frame_of_reference
        for keyword, value in (sentinels or {}).items():
            setattr(ds, keyword, value)
        path = folder / f"IM{len(paths):04d}.dcm"
        encode(ds, syntax, path)
        paths.append(path)
    return paths


def write_enhanced_mr(
    path: Path,
    n_frames: int = 6,
    iop: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_gap_mm: float = 2.5,
    pixel_spacing: tuple[float, float] = (0.3, 0.45),
    slope: float = 2.0,
    intercept: float = -10.0,
    seed: int = 0,
    syntax: str = "explicit",
    per_frame_positions: bool = True,
    shared_orientation: bool = True,
) -> Path:
    """One Enhanced MR Image Storage file holding the volume `write_mr_series` writes as slices
    (same positions, pixels, spacing and rescale): pixel spacing, orientation and rescale in the
    Shared Functional Groups (orientation per frame when `shared_orientation` is False), one
    PlanePositionSequence per frame; frames stored in shuffled order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    origin = np.array([-20.0, 35.0, 12.5])
    order = np.random.default_rng(seed).permutation(n_frames)
    base = ds.pixel_array // 4
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = uid.EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.NumberOfFrames = n_frames
    ds.RescaleSlope, ds.RescaleIntercept = "1", "0"  # must be overridden by the functional groups
    measures = Dataset()
    measures.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    measures.SliceThickness = f"{slice_gap_mm:g}"
    plane = Dataset()
    plane.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = (
        f"{slope:g}",
        f"{intercept:g}",
        "US",
    )
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    if shared_orientation:
        shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        item = Dataset()
        if per_frame_positions:
            position = Dataset()
            position.ImagePositionPatient = [f"{v:.4f}" for v in origin + k * slice_gap_mm * normal]
            item.PlanePositionSequence = Sequence([position])
        if not shared_orientation:
            item.PlaneOrientationSequence = Sequence([copy.deepcopy(plane)])
        content = Dataset()
        content.InStackPositionNumber = int(k) + 1
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack([base + 37 * int(k) for k in order]).astype(np.int16).tobytes()
    encode(ds, syntax, path)
    return path


@pytest.fixture
def mr_series_writer(tmp_path) -> Callable[..., Path]:
    def make(name: str = "series", **kwargs) -> Path:
        folder = tmp_path / name
        write_mr_series(folder, **kwargs)
        return folder

    return make
