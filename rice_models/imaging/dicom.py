"""DICOM MR series and RT Dose files -> canonical NIfTI images, de-identified.

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
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

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
)
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


def _floats(ds: Dataset, keyword: str, n: int, where: str) -> npt.NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None:
        raise ValueError(f"{where}: {keyword} is missing")
    arr = np.asarray([float(v) for v in (value if isinstance(value, MultiValue | list) else [value])])
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {keyword} must hold {n} finite numbers, got {list(value)!r}")
    return arr


def _orientation(ds: Dataset, where: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    iop = _floats(ds, "ImageOrientationPatient", 6, where)
    row_dir, col_dir = iop[:3], iop[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3:
        raise ValueError(f"{where}: ImageOrientationPatient is not made of unit vectors: {iop.tolist()}")
    return row_dir, col_dir


def _slice_pixels(ds: Dataset, where: str) -> npt.NDArray[np.float32]:
    """Pixel values of a single-frame slice with RescaleSlope/Intercept applied, shape (rows, cols)."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{where}: colour images (SamplesPerPixel > 1) are not MR magnitude images")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for unsupported transfer syntaxes
        raise ValueError(f"{where}: cannot decode the pixel data: {exc}") from exc
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (pixels.astype(np.float64) * slope + intercept).astype(np.float32)


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


def _read_folder_datasets(folder: Path) -> list[tuple[Path, Dataset]]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder holding a DICOM series")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise ValueError(f"{folder}: the folder holds no DICOM files")
    out: list[tuple[Path, Dataset]] = []
    for path in entries:
        if not path.is_file():
            raise ValueError(f"{folder}: {path.name} is not a file; a series folder must be flat")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as exc:
            raise ValueError(f"{folder}: {path.name} is not a DICOM file") from exc
        if "PixelData" not in ds:
            raise ValueError(f"{folder}: {path.name} is a DICOM file without image data")
        out.append((path, ds))
    return out


def read_mr_series(folder: Path | str, modalities: Sequence[str] = ("MR",)) -> nib.Nifti1Image:
    """One DICOM series (one single-frame image file per slice) as a canonical RAS float32 image.

    Hidden files (names starting with '.') are ignored; everything else must be a slice of the
    same series, with the same orientation, size and pixel spacing, evenly spaced along the normal.

    Args:
        folder: the folder of one series.
        modalities: accepted Modality values (MR by default; e.g. ("CT",) for CT).

    Raises:
        FileNotFoundError: `folder` is not a folder.
        ValueError: the folder is empty, holds a non-DICOM or non-image file, several series,
            an unexpected modality, multi-frame files, or slices that do not form one regular volume.
    """
    folder = Path(folder)
    datasets = _read_folder_datasets(folder)
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise ValueError(
            f"{folder}: the folder holds {len(series)} series (distinct SeriesInstanceUID); "
            "put each series in its own folder"
        )
    found = sorted({str(ds.get("Modality", "")) for _, ds in datasets})
    if any(m not in modalities for m in found):
        raise ValueError(f"{folder}: Modality {found} is not one of the accepted {list(modalities)}")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in datasets):
        raise ValueError(
            f"{folder}: multi-frame (enhanced) image files are not supported; export one file per slice"
        )

    row_dir, col_dir = _orientation(datasets[0][1], f"{folder}/{datasets[0][0].name}")
    spacing = _floats(datasets[0][1], "PixelSpacing", 2, f"{folder}/{datasets[0][0].name}")
    size = (int(datasets[0][1].Rows), int(datasets[0][1].Columns))
    for path, ds in datasets[1:]:
        where = f"{folder}/{path.name}"
        r, c = _orientation(ds, where)
        same = np.allclose(r, row_dir, atol=ORIENTATION_TOLERANCE) and np.allclose(
            c, col_dir, atol=ORIENTATION_TOLERANCE
        )
        if not same:
            raise ValueError(f"{folder}: slices have different ImageOrientationPatient; not one volume")
        if (int(ds.Rows), int(ds.Columns)) != size or not np.allclose(
            _floats(ds, "PixelSpacing", 2, where), spacing, atol=1e-6
        ):
            raise ValueError(f"{folder}: slices differ in Rows/Columns or PixelSpacing; not one volume")

    normal = np.cross(row_dir, col_dir)
    ipps = [_floats(ds, "ImagePositionPatient", 3, f"{folder}/{p.name}") for p, ds in datasets]
    order = np.argsort([float(ipp @ normal) for ipp in ipps], kind="stable")
    positions = np.asarray([float(ipps[i] @ normal) for i in order])
    if len(datasets) > 1:
        _uniform_step(positions, str(folder))
        slice_vector = (ipps[order[-1]] - ipps[order[0]]) / (len(datasets) - 1)
    else:
        ds0 = datasets[0][1]
        thickness = float(ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0)
        slice_vector = normal * thickness
    volume = np.stack(
        [_slice_pixels(datasets[i][1], f"{folder}/{datasets[i][0].name}").T for i in order], axis=-1
    )
    affine = _volume_affine_ras(ipps[order[0]], row_dir, col_dir, spacing, slice_vector)
    return canonical(make_image(volume, affine))


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
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ValueError(f"{path}: not a DICOM file") from exc
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
    try:
        raw = ds.pixel_array
    except Exception as exc:
        raise ValueError(f"{path}: cannot decode the dose grid: {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    raw = raw.reshape((frames, int(ds.Rows), int(ds.Columns)))
    row_dir, col_dir = _orientation(ds, str(path))
    spacing = _floats(ds, "PixelSpacing", 2, str(path))
    ipp = _floats(ds, "ImagePositionPatient", 3, str(path))
    normal = np.cross(row_dir, col_dir)
    if frames > 1:
        offsets = _floats(ds, "GridFrameOffsetVector", frames, str(path))
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

    Returns the whitelisted fields of `deidentified_fields` read from the file (or the first file
    of the folder, in name order) plus `n_files`; never names, dates, institutions or UIDs.

    Args:
        path: a DICOM file or a folder of one series.

    Raises:
        ValueError: no DICOM file to read.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        files = [path]
    if not files:
        raise ValueError(f"{path}: no DICOM file to summarise")
    try:
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise ValueError(f"{path}: {files[0].name} is not a DICOM file") from exc
    return {"n_files": len(files), **deidentified_fields(ds)}
