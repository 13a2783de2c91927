"""DICOM MR series and RT Dose files -> canonical NIfTI images, de-identified.

What is read: see `dicom_files` (every transfer syntax pydicom and the pinned pylibjpeg plugins
decode; files with or without the Part-10 header; single-frame and enhanced multi-frame files; a
DICOMDIR beside the images is skipped; sub-folders are walked). What is refused: several series in
one folder, another modality, colour images, files without image data, slices or frames that do
not form one regular volume (mixed orientation, size or pixel spacing; duplicated positions, i.e.
several volumes; uneven gaps), a multi-frame file without per-frame positions.

Geometry. DICOM patient coordinates are LPS; NIfTI world coordinates are RAS. A pixel at row r,
column c of a slice lies at `IPP + c * PixelSpacing[1] * row_dir + r * PixelSpacing[0] * col_dir`
(row_dir, col_dir: the two triplets of ImageOrientationPatient), in LPS mm. The NIfTI volume is
indexed (column, row, slice), slices sorted by their position along the slice normal
(row_dir x col_dir), and the LPS affine is left-multiplied by diag(-1, -1, 1, 1) to give RAS.

De-identification. Images are built from voxels and geometry only (`volume.make_image` starts from
an empty header), and the only header fields this module ever returns are those of the strict
whitelist `SAFE_FIELDS` (acquisition and dose-grid parameters, no names, dates, institutions, UIDs
or free text).
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from rice_models.imaging.dicom_files import (
    Frame,
    decoded_frames,
    floats,
    frames_of,
    is_index_file,
    orientation,
    read_dicom,
    shared_field,
    sop_class_name,
    transfer_syntax_name,
)
from rice_models.imaging.volume import canonical, make_image

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SAFE_FIELDS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "MagneticFieldStrength",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "BitsAllocated",
    "DoseUnits",
    "DoseType",
    "DoseSummationType",
    "DoseGridScaling",
    "LossyImageCompression",
    "ImageType",
)
# keys `dicom_summary` adds to the whitelisted fields: counts and standard names, never UIDs
DERIVED_FIELDS: tuple[str, ...] = ("n_files", "SOPClass", "TransferSyntax")
ORIENTATION_TOLERANCE = 1e-4  # difference allowed between the direction cosines of two slices
SPACING_RELATIVE_TOLERANCE = 0.01  # slice spacing may vary by 1% (+ POSITION_TOLERANCE_MM)
POSITION_TOLERANCE_MM = 1e-3
RELATIVE_UNITS = ("auto", "fraction", "percent")
# `auto`: a RELATIVE dose whose maximum is <= FRACTION_MAX_PLAUSIBLE is a fraction of the
# prescription; one whose maximum lies in PERCENT_MAX_PLAUSIBLE is in percent; anything else is refused.
FRACTION_MAX_PLAUSIBLE = 2.0
PERCENT_MAX_PLAUSIBLE = (20.0, 200.0)


def _to_json(value: Any) -> Any:
    if isinstance(value, MultiValue | list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal | float):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS | int):
        return int(value)
    return str(value)


def deidentified_fields(ds: Dataset) -> dict[str, Any]:
    """The whitelisted, non-identifying header fields of `ds` (those present), JSON-ready.

    Args:
        ds: a pydicom dataset.
    """
    out: dict[str, Any] = {}
    for keyword in SAFE_FIELDS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        out[keyword] = _to_json(value)
    return out


def _volume_affine_ras(
    ipp: npt.NDArray[np.float64],
    row_dir: npt.NDArray[np.float64],
    col_dir: npt.NDArray[np.float64],
    pixel_spacing: npt.NDArray[np.float64],
    slice_vector: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """RAS affine of a volume indexed (column, row, slice)."""
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]  # next column: along the row direction
    lps[:3, 1] = col_dir * pixel_spacing[0]  # next row: along the column direction
    lps[:3, 2] = slice_vector
    lps[:3, 3] = ipp
    return LPS_TO_RAS @ lps


def _uniform_step(positions: npt.NDArray[np.float64], where: str) -> float:
    """The common spacing of sorted slice positions (mm), refusing duplicates and uneven gaps."""
    gaps = np.diff(positions)
    if np.any(np.abs(gaps) < POSITION_TOLERANCE_MM):
        raise ValueError(
            f"{where}: several slices share one position (more than one volume, e.g. echoes or "
            "repeated acquisitions, in one series)"
        )
    step = float(np.mean(gaps))
    if np.max(np.abs(gaps - step)) > SPACING_RELATIVE_TOLERANCE * abs(step) + POSITION_TOLERANCE_MM:
        raise ValueError(
            f"{where}: slices are not evenly spaced (gaps {np.round(gaps, 3).tolist()} mm); "
            "a volume needs a uniform slice spacing"
        )
    return step


def _series_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder` (sub-folders walked), in path order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder holding a DICOM series")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise ValueError(f"{folder}: the folder holds no DICOM files")
    return files


def _read_folder_datasets(folder: Path, stop_before_pixels: bool = False) -> list[tuple[Path, Dataset]]:
    """The image files of a series folder, media index files (DICOMDIR) skipped.

    Raises:
        FileNotFoundError: not a folder.
        ValueError: empty, a non-DICOM file, a DICOM file without image data, or only an index file.
    """
    out: list[tuple[Path, Dataset]] = []
    for path in _series_files(folder):
        name = path.relative_to(folder)
        if is_index_file(path):
            log.info("%s: %s is a media index file (DICOMDIR); skipped", folder, name)
            continue
        ds = read_dicom(path, f"{folder}: {name}", stop_before_pixels=stop_before_pixels)
        if is_index_file(path, ds):
            log.info("%s: %s is a media index file (DICOMDIR); skipped", folder, name)
            continue
        if "PixelData" not in ds and not stop_before_pixels:
            raise ValueError(f"{folder}: {name} is a DICOM file without image data ({sop_class_name(ds)})")
        out.append((path, ds))
    if not out:
        raise ValueError(f"{folder}: the folder holds no DICOM image file (only a media index file)")
    return out


def _check_one_series(folder: Path, datasets: list[tuple[Path, Dataset]], modalities: Sequence[str]) -> None:
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise ValueError(
            f"{folder}: the folder holds {len(series)} series (distinct SeriesInstanceUID); "
            "put each series in its own folder"
        )
    found = sorted({str(ds.get("Modality", "")) for _, ds in datasets})
    if any(m not in modalities for m in found):
        raise ValueError(f"{folder}: Modality {found} is not one of the accepted {list(modalities)}")


def _check_same_plane(folder: Path, frames: list[Frame]) -> None:
    first = frames[0]
    for frame in frames[1:]:
        same = np.allclose(frame.row_dir, first.row_dir, atol=ORIENTATION_TOLERANCE) and np.allclose(
            frame.col_dir, first.col_dir, atol=ORIENTATION_TOLERANCE
        )
        if not same:
            raise ValueError(
                f"{folder}: slices have different ImageOrientationPatient ({frame.file.name}); not one volume"
            )
        if frame.size != first.size or not np.allclose(frame.spacing, first.spacing, atol=1e-6):
            raise ValueError(
                f"{folder}: slices differ in Rows/Columns or PixelSpacing ({frame.file.name}); not one volume"
            )


def read_mr_series(folder: Path | str, modalities: Sequence[str] = ("MR",)) -> nib.Nifti1Image:
    """One DICOM series as a canonical RAS float32 image.

    The series may be single-frame files (one per slice), enhanced multi-frame files, or both, in
    any transfer syntax `dicom_files` decodes, with or without the Part-10 header, in sub-folders,
    beside a DICOMDIR. Hidden files (a path part starting with '.') are ignored; everything else must
    be a frame of the same series, with the same orientation, size and pixel spacing, evenly spaced
    along the slice normal. RescaleSlope/Intercept (per frame for enhanced files) are applied.

    Args:
        folder: the folder of one series.
        modalities: accepted Modality values (MR by default; e.g. ("CT",) for CT).

    Raises:
        FileNotFoundError: `folder` is not a folder.
        ValueError: the folder is empty, holds a non-DICOM or non-image file, several series, an
            unexpected modality, undecodable pixel data, or frames that do not form one regular volume.
    """
    folder = Path(folder)
    datasets = _read_folder_datasets(folder)
    _check_one_series(folder, datasets, modalities)
    frames: list[Frame] = []
    for path, ds in datasets:
        frames.extend(frames_of(ds, path, f"{folder}: {path.relative_to(folder)}"))
    _check_same_plane(folder, frames)
    first = frames[0]
    normal = np.cross(first.row_dir, first.col_dir)
    order = np.argsort([float(f.position @ normal) for f in frames], kind="stable")
    positions = np.asarray([float(frames[i].position @ normal) for i in order])
    if len(frames) > 1:
        _uniform_step(positions, str(folder))
        slice_vector = (frames[order[-1]].position - frames[order[0]].position) / (len(frames) - 1)
    else:
        ds0 = datasets[0][1]
        thickness = float(ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0)
        slice_vector = normal * thickness
    pixels = {path: decoded_frames(ds, f"{folder}: {path.relative_to(folder)}") for path, ds in datasets}
    volume = np.stack(
        [
            (
                pixels[frames[i].file][frames[i].index].astype(np.float64) * frames[i].slope
                + frames[i].intercept
            ).T.astype(np.float32)
            for i in order
        ],
        axis=-1,
    )
    affine = _volume_affine_ras(
        frames[order[0]].position, first.row_dir, first.col_dir, first.spacing, slice_vector
    )
    return canonical(make_image(volume, affine))


def _frame_uids(path: Path) -> set[str]:
    """The FrameOfReferenceUIDs of a DICOM file or series folder (empty when none is given).

    Private on purpose: a UID is identifying and never leaves this module; only comparisons do.
    """
    if path.is_dir():
        datasets = _read_folder_datasets(path, stop_before_pixels=True)
    else:
        datasets = [(path, read_dicom(path, str(path), stop_before_pixels=True))]
    return {str(uid) for _, ds in datasets if (uid := ds.get("FrameOfReferenceUID"))}


def same_frame_of_reference(a: Path | str, b: Path | str) -> bool | None:
    """Whether two DICOM sources (RT Dose file, series folder) share one FrameOfReferenceUID.

    Only the answer leaves this function, never a UID.

    Args:
        a: a DICOM file or series folder.
        b: another.

    Returns:
        True when each source has exactly one FrameOfReferenceUID and they are equal, False when
        they differ (or a source holds several), None when either source gives none.

    Raises:
        ValueError: a source cannot be read as DICOM.
    """
    uids_a, uids_b = _frame_uids(Path(a)), _frame_uids(Path(b))
    if not uids_a or not uids_b:
        return None
    return len(uids_a) == 1 and uids_a == uids_b


def _relative_factor(max_value: float, prescription_gy: float, relative_unit: str, where: str) -> float:
    if relative_unit == "fraction":
        return prescription_gy
    if relative_unit == "percent":
        return prescription_gy / 100.0
    if max_value <= FRACTION_MAX_PLAUSIBLE:
        return prescription_gy
    if PERCENT_MAX_PLAUSIBLE[0] <= max_value <= PERCENT_MAX_PLAUSIBLE[1]:
        log.info("%s: RELATIVE dose with maximum %.3g read as percent of the prescription", where, max_value)
        return prescription_gy / 100.0
    raise ValueError(
        f"{where}: DoseUnits is RELATIVE but the maximum relative dose {max_value:.4g} is neither a "
        f"plausible fraction (<= {FRACTION_MAX_PLAUSIBLE}) nor a plausible percentage "
        f"({PERCENT_MAX_PLAUSIBLE[0]:g}-{PERCENT_MAX_PLAUSIBLE[1]:g}) of the prescription"
    )


def read_rt_dose(
    path: Path | str, prescription_gy: float | None = None, relative_unit: str = "auto"
) -> nib.Nifti1Image:
    """A DICOM RT Dose file as a canonical RAS float32 image in Gy.

    Raw values are multiplied by DoseGridScaling. DoseUnits `GY` is used as is. DoseUnits
    `RELATIVE` is a dose relative to the prescription and needs `prescription_gy` (cohort.csv column
    `prescription_gy`): dose = relative x prescription_gy when the relative values are fractions
    (1.0 = prescription), relative / 100 x prescription_gy when they are percentages.
    `relative_unit="auto"` (default) decides from the maximum: <= 2.0 is a fraction, 20-200 is a
    percentage, anything else is refused as ambiguous.

    Args:
        path: the RT Dose file.
        prescription_gy: prescribed dose in Gy, required for RELATIVE doses, ignored for GY.
        relative_unit: `auto`, `fraction` or `percent` (RELATIVE doses only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an RT Dose file, unknown DoseUnits, RELATIVE without a prescription,
            missing or uneven GridFrameOffsetVector, or a bad argument.
    """
    path = Path(path)
    if relative_unit not in RELATIVE_UNITS:
        raise ValueError(f"relative_unit must be one of {RELATIVE_UNITS}, got {relative_unit!r}")
    if prescription_gy is not None and not (
        isinstance(prescription_gy, int | float) and np.isfinite(prescription_gy) and prescription_gy > 0
    ):
        raise ValueError(f"prescription_gy must be a positive number of Gy, got {prescription_gy!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such RT Dose file")
    ds = read_dicom(path, str(path))
    if ds.get("Modality") != "RTDOSE" or "PixelData" not in ds:
        raise ValueError(f"{path}: not an RT Dose file with a dose grid (Modality {ds.get('Modality')!r})")
    units = str(ds.get("DoseUnits", "")).upper()
    if units not in ("GY", "RELATIVE"):
        raise ValueError(f"{path}: DoseUnits {units!r} is neither GY nor RELATIVE")
    if units == "RELATIVE" and prescription_gy is None:
        raise ValueError(
            f"{path}: DoseUnits is RELATIVE (a fraction of the prescribed dose); "
            "the cohort.csv column `prescription_gy` is needed to convert it to Gy"
        )
    if "DoseGridScaling" not in ds:
        raise ValueError(f"{path}: DoseGridScaling is missing")
    scaling = float(ds.DoseGridScaling)
    raw = decoded_frames(ds, f"{path}: the dose grid")
    frames = raw.shape[0]
    row_dir, col_dir = orientation(floats(ds, "ImageOrientationPatient", 6, str(path)), str(path))
    spacing = floats(ds, "PixelSpacing", 2, str(path))
    ipp = floats(ds, "ImagePositionPatient", 3, str(path))
    normal = np.cross(row_dir, col_dir)
    if frames > 1:
        offsets = floats(ds, "GridFrameOffsetVector", frames, str(path))
        # relative offsets start at 0; absolute ones (allowed for axial grids) start at the IPP's z
        step = _uniform_step(offsets - offsets[0], f"{path}: GridFrameOffsetVector")
    else:
        step = float(ds.get("SliceThickness") or 1.0)

    dose = raw.astype(np.float64) * scaling
    if units == "RELATIVE":
        assert prescription_gy is not None
        dose *= _relative_factor(float(dose.max()), float(prescription_gy), relative_unit, str(path))
    slice_vector = np.asarray(normal * step, dtype=np.float64)
    affine = _volume_affine_ras(ipp, row_dir, col_dir, spacing, slice_vector)
    return canonical(make_image(dose.transpose(2, 1, 0), affine))


def dicom_summary(path: Path | str) -> dict[str, Any]:
    """Non-identifying description of a DICOM source (an RT Dose file or a series folder).

    Returns the whitelisted fields of `deidentified_fields` read from the file (or the first image
    file of the folder, in path order; a DICOMDIR is skipped), the pixel spacing and orientation of
    an enhanced file's shared functional groups, the names (not UIDs) of its SOP Class and transfer
    syntax, and `n_files`; never names, dates, institutions or UIDs.

    Args:
        path: a DICOM file or a folder of one series.

    Raises:
        ValueError: no DICOM image file to read, or a file that is not DICOM.
    """
    path = Path(path)
    if path.is_dir():
        datasets = _read_folder_datasets(path, stop_before_pixels=True)
    else:
        datasets = [(path, read_dicom(path, str(path), stop_before_pixels=True))]
    ds = datasets[0][1]
    out: dict[str, Any] = {"n_files": len(datasets), **deidentified_fields(ds)}
    for group, keyword in (
        ("PixelMeasuresSequence", "PixelSpacing"),
        ("PixelMeasuresSequence", "SliceThickness"),
        ("PlaneOrientationSequence", "ImageOrientationPatient"),
    ):
        value = shared_field(ds, group, keyword)
        if keyword not in out and value not in (None, ""):
            out[keyword] = _to_json(value)
    out["SOPClass"] = sop_class_name(ds)
    out["TransferSyntax"] = transfer_syntax_name(ds)
    return out
