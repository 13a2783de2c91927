"""Reading the landing zone's inputs: NIfTI geometry, and how the dose reaches the post-op MRI."""

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from rice_models.imaging.dicom import same_frame_of_reference
from rice_models.sources import InputError, dose_frame, read_source
from tests.rice_models.imaging.conftest import write_mr_series

FRAME_A, FRAME_B = "1.2.826.0.1.3680043.8.498.201", "1.2.826.0.1.3680043.8.498.202"


def _rt_dose(path, frame):
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    ds.FrameOfReferenceUID = frame
    ds.save_as(path)
    return path


def _nifti(path, sform_code=1, data=None):
    data = np.arange(64, dtype=np.float32).reshape(4, 4, 4) if data is None else data
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.set_sform(img.affine, code=sform_code)
    img.set_qform(img.affine, code=sform_code)
    nib.save(img, path)
    return path


@pytest.fixture
def inputs(tmp_path):
    def make(dose_frame_uid=FRAME_A, mr_frame=FRAME_A, ct_frame=None, dicom_mr=True, dicom_dose=True):
        out = {}
        if dicom_mr:
            out["mri_postop"] = tmp_path / "mri_postop"
            write_mr_series(out["mri_postop"], n_slices=3, frame_of_reference=mr_frame)
        else:
            out["mri_postop"] = _nifti(tmp_path / "mri_postop.nii.gz")
        out["dose"] = (
            _rt_dose(tmp_path / "dose.dcm", dose_frame_uid) if dicom_dose else _nifti(tmp_path / "d.nii")
        )
        if ct_frame is not None:
            out["planning_ct"] = tmp_path / "planning_ct"
            write_mr_series(out["planning_ct"], n_slices=3, frame_of_reference=ct_frame)
        return out

    return make


def test_same_frame(inputs):
    frame = dose_frame("P1", inputs())
    assert (frame.relation, frame.dose_postop_same_uid) == ("same_frame", True)
    assert FRAME_A not in str(frame.as_dict())


def test_other_frame_without_ct_is_refused(inputs):
    with pytest.raises(
        InputError, match=r"patient P1, .*dose.dcm: .*different FrameOfReferenceUID.*P1/planning_ct/"
    ):
        dose_frame("P1", inputs(mr_frame=FRAME_B))


def test_other_frame_with_the_dose_planning_ct(inputs):
    frame = dose_frame("P1", inputs(mr_frame=FRAME_B, ct_frame=FRAME_A))
    assert (frame.relation, frame.dose_postop_same_uid, frame.dose_ct_same_uid) == (
        "planning_ct",
        False,
        True,
    )


def test_planning_ct_of_another_frame_is_refused(inputs):
    with pytest.raises(InputError, match=r"planning_ct: the planning CT and the RT Dose have different"):
        dose_frame("P1", inputs(mr_frame=FRAME_B, ct_frame=FRAME_B))


@pytest.mark.parametrize(("dicom_mr", "dicom_dose"), [(False, True), (True, False), (False, False)])
def test_no_uid_to_compare_is_assumed(inputs, dicom_mr, dicom_dose):
    frame = dose_frame("P1", inputs(dicom_mr=dicom_mr, dicom_dose=dicom_dose))
    assert (frame.relation, frame.dose_postop_same_uid) == ("assumed", None)


def test_same_frame_of_reference_without_uid(tmp_path):
    folder = tmp_path / "s"
    for path in write_mr_series(folder, n_slices=2):
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    assert same_frame_of_reference(folder, _rt_dose(tmp_path / "d.dcm", FRAME_A)) is None


def test_nifti_without_geometry_refused_unless_accepted(tmp_path):
    path = _nifti(tmp_path / "mri_postop.nii.gz", sform_code=0)
    with pytest.raises(InputError, match=r"patient P1, .*mri_postop.nii.gz: .*both 0"):
        read_source("P1", "mri_postop", path)
    scan = read_source("P1", "mri_postop", path, accept_missing_geometry=True)
    assert scan.notes and "accept_missing_geometry=yes" in scan.notes[0]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (np.zeros((4, 4, 4), np.float32), r"every voxel is 0"),
        (np.full((4, 4, 4), np.nan, np.float32), "no finite"),
    ],
)
def test_a_blank_mri_is_refused(tmp_path, data, why):
    path = _nifti(tmp_path / "mri_event.nii.gz", data=data)
    with pytest.raises(
        InputError, match=rf"patient P1, .*mri_event.nii.gz: the mri_event image is blank \({why}"
    ):
        read_source("P1", "mri_event", path)


def test_planning_ct_series_is_read_as_ct(tmp_path):
    folder = tmp_path / "planning_ct"
    for path in write_mr_series(folder, n_slices=3):
        ds = pydicom.dcmread(path)
        ds.Modality = "CT"
        ds.save_as(path)
    scan = read_source("P1", "planning_ct", folder)
    assert scan.modality == "CT" and scan.format == "dicom"
    with pytest.raises(InputError, match=r"Modality \['CT'\]"):
        read_source("P1", "mri_postop", folder)
