"""DICOM files as PACS and scanners write them: reading, decoding, and the image frames they hold.

Reading. Every file is read with pydicom. A file without the Part-10 header (no preamble, no File
Meta Information, as some PACS exports and older scanners write it) is read with `force=True` and
accepted only when it holds an image (SOP Class or Modality, Rows, Columns, Pixel Data); its
transfer syntax is then the encoding pydicom found (implicit/explicit VR, byte order). A media
index file (DICOMDIR, SOP Class Media Storage Directory Storage) is recognised and skipped.

Decoding. Pixel data is decoded by pydicom's decoders and the pylibjpeg plugins pinned in
`pyproject.toml`: uncompressed (implicit/explicit VR, little/big endian), deflate, RLE Lossless,
JPEG Lossless (processes 14 and 14 SV1), JPEG baseline/extended, JPEG-LS (lossless and
near-lossless), JPEG 2000 and HTJ2K. A syntax no installed plugin decodes is refused with its name.

Frames. A single-frame image file (MR/CT Image Storage) holds one frame whose geometry is its
ImagePositionPatient, ImageOrientationPatient and PixelSpacing. An enhanced multi-frame file
(Enhanced MR/CT, Legacy Converted Enhanced) holds one frame per entry of its Per-frame Functional
Groups Sequence; each frame's Pixel Measures (PixelSpacing), Plane Orientation
(ImageOrientationPatient), Plane Position (ImagePositionPatient) and Pixel Value Transformation
(RescaleSlope/Intercept) come from the per-frame group, else from the Shared Functional Groups.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

log = logging.getLogger(__name__)

INDEX_FILE_NAMES = ("DICOMDIR",)
FUNCTIONAL_GROUPS = (
    "PixelMeasuresSequence",
    "PlaneOrientationSequence",
    "PlanePositionSequence",
    "PixelValueTransformationSequence",
)


def floats(ds: Dataset, keyword: str, n: int, where: str) -> npt.NDArray[np.float64]:
    """`n` finite numbers of element `keyword` of `ds`.

    Raises:
        ValueError: the element is missing or does not hold `n` finite numbers (names `where`).
    """
    value = ds.get(keyword)
    if value is None or value == "":
        raise ValueError(f"{where}: {keyword} is missing")
    try:
        arr = np.asarray([float(v) for v in (value if isinstance(value, MultiValue | list) else [value])])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {keyword} is not numeric: {value!r}") from exc
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {keyword} must hold {n} finite numbers, got {list(arr)!r}")
    return arr


def orientation(iop: npt.NDArray[np.float64], where: str) -> tuple[npt.NDArray[np.float64], ...]:
    """Row and column direction cosines of an ImageOrientationPatient, checked to be orthonormal.

    Raises:
        ValueError: not unit vectors, or not orthogonal (names `where`).
    """
    row_dir, col_dir = iop[:3], iop[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3:
        raise ValueError(f"{where}: ImageOrientationPatient is not made of unit vectors: {iop.tolist()}")
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise ValueError(f"{where}: ImageOrientationPatient rows and columns are not orthogonal")
    return row_dir, col_dir


def is_index_file(path: Path, ds: Dataset | None = None) -> bool:
    """True for a DICOM media index (DICOMDIR): it lists files, it holds no image."""
    if path.name.upper() in INDEX_FILE_NAMES:
        return True
    if ds is None:
        return False
    sop = ds.file_meta.get("MediaStorageSOPClassUID") if hasattr(ds, "file_meta") else None
    return sop == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _encoding_syntax(ds: Dataset) -> UID:
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian


def read_dicom(path: Path, where: str, stop_before_pixels: bool = False) -> Dataset:
    """One DICOM file, with or without its Part-10 header.

    Args:
        path: the file.
        where: how to name the file in errors (e.g. `folder: name`).
        stop_before_pixels: read the header only.

    Raises:
        ValueError: the file is not DICOM, or is damaged (names `where`).
    """
    forced = False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        forced = True
    except Exception as exc:
        raise ValueError(f"{where}: cannot be read as DICOM (damaged or truncated?): {exc}") from exc
    if forced:
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
        except Exception as exc:  # a forced read of a non-DICOM file fails in many ways
            raise ValueError(f"{where} is not a DICOM file") from exc
        wanted = ("Rows", "Columns") if stop_before_pixels else ("Rows", "Columns", "PixelData")
        if not ("SOPClassUID" in ds or "Modality" in ds) or not all(k in ds for k in wanted):
            raise ValueError(f"{where} is not a DICOM file (no Part-10 header, and no image elements)")
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = _encoding_syntax(ds)
    return ds


def transfer_syntax_name(ds: Dataset) -> str:
    """The name of the file's transfer syntax (e.g. `JPEG Lossless, Non-Hierarchical ...`)."""
    uid = ds.file_meta.get("TransferSyntaxUID")
    return str(uid.name) if isinstance(uid, UID) else str(uid)


def sop_class_name(ds: Dataset) -> str:
    """The name of the file's SOP Class (e.g. `Enhanced MR Image Storage`), or ''."""
    uid = ds.get("SOPClassUID")
    return str(UID(str(uid)).name) if uid else ""


def decoded_frames(ds: Dataset, where: str) -> npt.NDArray[Any]:
    """The stored pixel values of every frame, shape (frames, rows, columns).

    Raises:
        ValueError: colour data, or a transfer syntax no installed decoder reads (names it).
    """
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ValueError(f"{where}: colour images (SamplesPerPixel > 1) are not MR/CT magnitude images")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for unsupported or damaged data
        uid = ds.file_meta.get("TransferSyntaxUID")
        syntax = f"transfer syntax {transfer_syntax_name(ds)}, {uid}"
        raise ValueError(f"{where}: cannot decode the pixel data ({syntax}): {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return np.asarray(pixels).reshape((frames, int(ds.Rows), int(ds.Columns)))


@dataclasses.dataclass(frozen=True)
class Frame:
    """One 2D image of a file with its geometry (LPS mm) and its rescale.

    Args:
        file: the file holding it.
        index: the frame's index in that file (0 for a single-frame file).
        position: ImagePositionPatient (centre of the first pixel).
        row_dir: direction of increasing column index (first triplet of ImageOrientationPatient).
        col_dir: direction of increasing row index (second triplet).
        spacing: PixelSpacing (row spacing, column spacing).
        size: (Rows, Columns).
        slope: RescaleSlope.
        intercept: RescaleIntercept.
    """

    file: Path
    index: int
    position: npt.NDArray[np.float64]
    row_dir: npt.NDArray[np.float64]
    col_dir: npt.NDArray[np.float64]
    spacing: npt.NDArray[np.float64]
    size: tuple[int, int]
    slope: float
    intercept: float


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return slope, intercept


def _group(item: Dataset, shared: Dataset, name: str) -> Dataset | None:
    for holder in (item, shared):
        seq = holder.get(name)
        if seq:
            return seq[0]
    return None


def frames_of(ds: Dataset, path: Path, where: str) -> list[Frame]:
    """The frames of one image file (module docstring), in file order.

    Raises:
        ValueError: geometry missing or malformed (names the file and the frame).
    """
    size = (int(ds.Rows), int(ds.Columns))
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if n_frames == 1 and per_frame is None:
        row_dir, col_dir = orientation(floats(ds, "ImageOrientationPatient", 6, where), where)
        return [
            Frame(
                path,
                0,
                floats(ds, "ImagePositionPatient", 3, where),
                row_dir,
                col_dir,
                floats(ds, "PixelSpacing", 2, where),
                size,
                *_rescale(ds),
            )
        ]
    if per_frame is None or len(per_frame) != n_frames:
        raise ValueError(
            f"{where}: a multi-frame file of {n_frames} frames without a Per-frame Functional Groups "
            "Sequence of as many items: the position of each frame is unknown"
        )
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else Dataset()
    out = []
    for index, item in enumerate(per_frame):
        at = f"{where} frame {index + 1}"
        groups = {name: _group(item, shared, name) for name in FUNCTIONAL_GROUPS}
        missing = [name for name in FUNCTIONAL_GROUPS[:3] if groups[name] is None]
        if missing:
            raise ValueError(f"{at}: functional group(s) {missing} missing (neither per-frame nor shared)")
        measures, plane, position = (groups[name] for name in FUNCTIONAL_GROUPS[:3])
        assert measures is not None and plane is not None and position is not None
        row_dir, col_dir = orientation(floats(plane, "ImageOrientationPatient", 6, at), at)
        transform = groups["PixelValueTransformationSequence"]
        slope, intercept = _rescale(transform) if transform is not None else _rescale(ds)
        out.append(
            Frame(
                path,
                index,
                floats(position, "ImagePositionPatient", 3, at),
                row_dir,
                col_dir,
                floats(measures, "PixelSpacing", 2, at),
                size,
                slope,
                intercept,
            )
        )
    return out


def shared_field(ds: Dataset, group: str, keyword: str) -> Any:
    """`keyword` from the Shared Functional Groups' `group` of an enhanced file, else None."""
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    if not shared_seq:
        return None
    seq = shared_seq[0].get(group)
    return seq[0].get(keyword) if seq else None
