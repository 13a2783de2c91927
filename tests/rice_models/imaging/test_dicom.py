import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from rice_models.imaging.dicom import (
    DERIVED_FIELDS,
    SAFE_FIELDS,
    deidentified_fields,
    dicom_summary,
    read_mr_series,
    read_rt_dose,
)
from rice_models.imaging.volume import data_of, save_nifti, spacing_of

from .conftest import SENTINELS, SYNTAXES, write_enhanced_mr, write_mr_series

RTDOSE = Path(get_testdata_file("rtdose.dcm"))
DICOMDIR_TESTS = Path(get_testdata_file("MR_small.dcm")).parent / "dicomdirtests"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def voxel_of(img, ras_point) -> tuple[int, int, int]:
    """The voxel whose centre is `ras_point`, asserting that it is a voxel centre."""
    idx = np.linalg.inv(img.affine) @ np.append(ras_point, 1.0)
    assert np.allclose(idx[:3], np.round(idx[:3]), atol=1e-3), idx
    return tuple(int(v) for v in np.round(idx[:3]))


def check_slice_geometry(img, ds, pixel_values) -> None:
    """Every corner and an interior pixel of slice `ds` sit at their DICOM (LPS) position in `img`."""
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    spacing = [float(v) for v in ds.PixelSpacing]
    rows, cols = pixel_values.shape
    for r, c in [(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1), (rows // 3, cols // 2)]:
        lps = ipp + c * spacing[1] * iop[:3] + r * spacing[0] * iop[3:]
        i, j, k = voxel_of(img, LPS_TO_RAS @ lps)
        assert data_of(img)[i, j, k] == pytest.approx(pixel_values[r, c], rel=1e-6, abs=1e-4)


# --- RT Dose --------------------------------------------------------------------------------------


def test_rt_dose_matches_header():
    ds = pydicom.dcmread(RTDOSE)
    img = read_rt_dose(RTDOSE, prescription_gy=60.0)
    assert img.shape == (int(ds.Columns), int(ds.Rows), int(ds.NumberOfFrames))
    offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector])
    expected_spacing = (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), float(np.diff(offsets).mean()))
    assert spacing_of(img) == pytest.approx(expected_spacing)
    raw = ds.pixel_array.astype(np.float64)
    scale = float(ds.DoseGridScaling) * 60.0
    assert data_of(img).max() == pytest.approx(raw.max() * scale, rel=1e-6)
    assert data_of(img).dtype == np.float32
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    spacing = [float(v) for v in ds.PixelSpacing]
    for f, r, c in [(0, 0, 0), (14, 9, 9), (7, 2, 8), (3, 6, 1)]:
        lps = ipp + np.array([c * spacing[1], r * spacing[0], offsets[f]])  # IOP is 1\0\0\0\1\0
        i, j, k = voxel_of(img, LPS_TO_RAS @ lps)
        assert data_of(img)[i, j, k] == pytest.approx(raw[f, r, c] * scale, rel=1e-6)


def test_rt_dose_relative_without_prescription_is_refused():
    with pytest.raises(ValueError) as err:
        read_rt_dose(RTDOSE)
    message = str(err.value)
    assert str(RTDOSE) in message
    assert "RELATIVE" in message
    assert "prescription_gy" in message and "cohort.csv" in message


def _dose_copy(tmp_path: Path, **changes) -> Path:
    ds = pydicom.dcmread(RTDOSE)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = tmp_path / "dose.dcm"
    ds.save_as(out)
    return out


RAW_MAX = 1254000  # max stored value of pydicom's rtdose.dcm


@pytest.mark.parametrize(
    ("changes", "prescription", "relative_unit", "expected_max"),
    [
        ({"DoseUnits": "GY"}, None, "auto", RAW_MAX * 1e-6),  # Gy used as is
        ({"DoseUnits": "GY"}, 60.0, "auto", RAW_MAX * 1e-6),  # prescription ignored for Gy
        ({}, 60.0, "auto", RAW_MAX * 1e-6 * 60.0),  # max 1.254: a fraction
        ({}, 60.0, "fraction", RAW_MAX * 1e-6 * 60.0),
        ({"DoseGridScaling": "1e-4"}, 60.0, "auto", RAW_MAX * 1e-4 / 100 * 60.0),  # max 125.4: percent
        ({"DoseGridScaling": "1e-4"}, 60.0, "percent", RAW_MAX * 1e-4 / 100 * 60.0),
    ],
)
def test_rt_dose_units(tmp_path, changes, prescription, relative_unit, expected_max):
    img = read_rt_dose(_dose_copy(tmp_path, **changes), prescription, relative_unit=relative_unit)
    assert data_of(img).max() == pytest.approx(expected_max, rel=1e-5)


@pytest.mark.parametrize(
    ("changes", "kwargs", "error", "match"),
    [
        ({"DoseGridScaling": "1e-5"}, {"prescription_gy": 60.0}, ValueError, "neither a plausible fraction"),
        ({"DoseUnits": "CGY"}, {"prescription_gy": 60.0}, ValueError, "neither GY nor RELATIVE"),
        ({"Modality": "MR"}, {}, ValueError, "not an RT Dose"),
        ({}, {"prescription_gy": -1.0}, ValueError, "positive number"),
        ({}, {"prescription_gy": 60.0, "relative_unit": "permille"}, ValueError, "relative_unit"),
        (
            {"GridFrameOffsetVector": [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 90]},
            {"prescription_gy": 60.0},
            ValueError,
            "not evenly spaced",
        ),
    ],
)
def test_rt_dose_failures(tmp_path, changes, kwargs, error, match):
    with pytest.raises(error, match=match):
        read_rt_dose(_dose_copy(tmp_path, **changes), **kwargs)


def test_rt_dose_missing_and_non_dicom(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_rt_dose(tmp_path / "absent.dcm", 60.0)
    junk = tmp_path / "junk.dcm"
    junk.write_text("not dicom")
    with pytest.raises(ValueError, match="not a DICOM file"):
        read_rt_dose(junk, 60.0)


# --- MR series --------------------------------------------------------------------------------------

OBLIQUE_IOP = (0.9848078, 0.1736482, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated 10 degrees


@pytest.mark.parametrize(
    "iop",
    [
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # axial
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # sagittal
        OBLIQUE_IOP,
    ],
)
def test_mr_series_geometry_matches_ipp_iop(mr_series_writer, iop):
    folder = mr_series_writer(iop=iop, slice_gap_mm=2.5, slope=2.0, intercept=-10.0)
    img = read_mr_series(folder)
    assert sorted(img.shape) == [6, 64, 64]
    assert sorted(spacing_of(img)) == pytest.approx(sorted([0.3, 0.45, 2.5]), abs=1e-4)
    assert data_of(img).dtype == np.float32
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        check_slice_geometry(img, ds, ds.pixel_array.astype(np.float64) * 2.0 - 10.0)


def test_real_ct_series_geometry_and_rescale():
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"  # 5 slices, files in descending z, intercept -1024
    img = read_mr_series(folder, modalities=("CT",))
    assert img.shape == (16, 16, 5)
    assert spacing_of(img) == pytest.approx((0.488281, 0.488281, 2.5), abs=1e-5)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        check_slice_geometry(img, ds, values)


@pytest.mark.parametrize(
    ("folder", "kwargs", "match"),
    [
        (DICOMDIR_TESTS / "98892003" / "MR1", {}, "3 series"),
        (DICOMDIR_TESTS / "98892003" / "MR700", {}, "different ImageOrientationPatient"),
        (DICOMDIR_TESTS / "77654033" / "CT2", {"modalities": ("CT",)}, "not evenly spaced"),
        (DICOMDIR_TESTS / "98892001" / "CT5N", {}, r"Modality \['CT'\] is not one of"),
    ],
)
def test_mr_series_refusals_on_real_folders(folder, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        read_mr_series(folder, **kwargs)
    assert str(folder) in str(err.value)


def test_mr_series_refuses_non_dicom_and_non_image(mr_series_writer, tmp_path):
    folder = mr_series_writer("with_text")
    (folder / "notes.txt").write_text("scanner notes")
    with pytest.raises(ValueError, match="notes.txt is not a DICOM file") as err:
        read_mr_series(folder)
    assert str(folder) in str(err.value)

    folder = mr_series_writer("with_plan")
    shutil.copy(get_testdata_file("rtplan.dcm"), folder / "plan.dcm")
    with pytest.raises(ValueError, match="plan.dcm is a DICOM file without image data"):
        read_mr_series(folder)

    only_index = tmp_path / "only_index"
    only_index.mkdir()
    shutil.copy(DICOMDIR_TESTS / "DICOMDIR", only_index / "DICOMDIR")
    with pytest.raises(ValueError, match="no DICOM image file"):
        read_mr_series(only_index)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no DICOM files"):
        read_mr_series(empty)
    with pytest.raises(FileNotFoundError):
        read_mr_series(tmp_path / "absent")


def test_mr_series_refuses_two_series_and_duplicates(mr_series_writer, tmp_path):
    folder = mr_series_writer("two", n_slices=3)
    write_other = mr_series_writer("other", n_slices=3)
    for path in write_other.iterdir():
        shutil.copy(path, folder / f"other_{path.name}")
    with pytest.raises(ValueError, match="2 series"):
        read_mr_series(folder)

    dup = mr_series_writer("dup", n_slices=3)
    first = sorted(dup.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(dup / "copy.dcm")
    with pytest.raises(ValueError, match="share one position"):
        read_mr_series(dup)


def test_hidden_files_are_ignored(mr_series_writer):
    folder = mr_series_writer("hidden", n_slices=4)
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    assert sorted(read_mr_series(folder).shape) == [4, 64, 64]


# --- de-identification ------------------------------------------------------------------------------


def test_nothing_identifying_leaves_the_converter(mr_series_writer, tmp_path):
    folder = mr_series_writer("identified", sentinels=SENTINELS)
    img = read_mr_series(folder)
    for field in ("descrip", "db_name", "aux_file", "intent_name"):
        assert img.header[field].item() == b""
    plain = save_nifti(img, tmp_path / "out.nii")
    packed = save_nifti(img, tmp_path / "out.nii.gz")
    blobs = [plain.read_bytes(), gzip.decompress(packed.read_bytes())]
    summary = dicom_summary(folder)
    fields = deidentified_fields(pydicom.dcmread(next(folder.iterdir())))
    blobs.append(json.dumps(summary).encode())
    blobs.append(json.dumps(fields).encode())
    for value in SENTINELS.values():
        for part in value.split("^"):
            assert all(part.encode() not in blob for blob in blobs), part
    assert set(fields) <= set(SAFE_FIELDS)
    assert summary["n_files"] == 6 and summary["Modality"] == "MR"


def test_rt_dose_summary_is_whitelisted():
    summary = dicom_summary(RTDOSE)
    assert summary["DoseUnits"] == "RELATIVE"
    assert summary["NumberOfFrames"] == 15
    assert set(summary) - set(DERIVED_FIELDS) <= set(SAFE_FIELDS)
    ds = pydicom.dcmread(RTDOSE)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds.get(keyword, ""))
        if value:
            assert value not in json.dumps(summary)


# --- what PACS and scanners write: transfer syntaxes, enhanced files, index files ----------------------


@pytest.fixture(scope="module")
def reference_series(tmp_path_factory):
    """The uncompressed reference series (oblique, shuffled files) and its image."""
    folder = tmp_path_factory.mktemp("reference") / "series"
    write_mr_series(folder, iop=OBLIQUE_IOP)
    return read_mr_series(folder)


def _same_image(img, reference) -> None:
    assert img.shape == reference.shape
    assert np.allclose(img.affine, reference.affine, atol=1e-4)
    assert np.array_equal(data_of(img), data_of(reference))


@pytest.mark.parametrize("syntax", [s for s in SYNTAXES if s != "explicit"])
def test_every_transfer_syntax_gives_the_uncompressed_volume(tmp_path, reference_series, syntax):
    folder = tmp_path / syntax
    paths = write_mr_series(folder, iop=OBLIQUE_IOP, syntax=syntax)
    if syntax == "jpeg-lossless":
        assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    _same_image(read_mr_series(folder), reference_series)
    summary = dicom_summary(folder)
    assert summary["n_files"] == 6 and summary["Modality"] == "MR"


@pytest.mark.parametrize("syntax", ["explicit", "jpeg-lossless", "j2k"])
def test_enhanced_multiframe_file_gives_the_same_volume(tmp_path, reference_series, syntax):
    path = write_enhanced_mr(tmp_path / "event" / "enhanced.dcm", iop=OBLIQUE_IOP, syntax=syntax)
    _same_image(read_mr_series(path.parent), reference_series)
    summary = dicom_summary(path.parent)
    assert summary["SOPClass"] == "Enhanced MR Image Storage"
    assert summary["NumberOfFrames"] == 6 and summary["PixelSpacing"] == [0.3, 0.45]


def test_enhanced_file_with_per_frame_orientation(tmp_path, reference_series):
    path = write_enhanced_mr(tmp_path / "e" / "enhanced.dcm", iop=OBLIQUE_IOP, shared_orientation=False)
    _same_image(read_mr_series(path.parent), reference_series)


def test_enhanced_file_without_positions_is_refused(tmp_path):
    path = write_enhanced_mr(tmp_path / "e" / "enhanced.dcm", per_frame_positions=False)
    with pytest.raises(
        ValueError, match=r"frame 1: functional group\(s\) \['PlanePositionSequence'\] missing"
    ):
        read_mr_series(path.parent)


def test_enhanced_file_with_two_volumes_is_refused(tmp_path):
    folder = tmp_path / "two"
    write_enhanced_mr(folder / "a.dcm")
    ds = pydicom.dcmread(folder / "a.dcm")
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "b.dcm")  # same series, same positions: a second volume (e.g. another echo)
    with pytest.raises(ValueError, match="share one position"):
        read_mr_series(folder)


def test_pacs_export_with_dicomdir_and_subfolders(tmp_path, reference_series):
    folder = tmp_path / "export"
    write_mr_series(folder / "DICOM" / "S1", iop=OBLIQUE_IOP, syntax="jpeg-lossless")
    shutil.copy(DICOMDIR_TESTS / "DICOMDIR", folder / "DICOMDIR")
    _same_image(read_mr_series(folder), reference_series)
    assert dicom_summary(folder)["n_files"] == 6


def test_non_dicom_file_without_header_is_refused(mr_series_writer):
    folder = mr_series_writer("junk")
    (folder / "IM9999").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="IM9999 is not a DICOM file"):
        read_mr_series(folder)


def test_truncated_file_is_refused(mr_series_writer):
    folder = mr_series_writer("truncated")
    first = sorted(folder.iterdir())[0]
    first.write_bytes(first.read_bytes()[:3000])
    with pytest.raises(ValueError, match=first.name):
        read_mr_series(folder)


def test_colour_image_is_refused(tmp_path):
    folder = tmp_path / "colour"
    folder.mkdir()
    shutil.copy(get_testdata_file("SC_rgb_rle.dcm"), folder / "sc.dcm")
    with pytest.raises(ValueError):
        read_mr_series(folder, modalities=("OT", "MR"))
