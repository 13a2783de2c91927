import dataclasses
import re

import numpy as np
import pytest

from rice_models.imaging.brain_mask import HDBET_PARAMS_ENV
from rice_models.imaging.pipeline import (
    CHANNEL_FILES,
    RegistrationFailed,
    blocking_problems,
    preprocess_patient,
)
from rice_models.imaging.registration import ncc
from rice_models.imaging.resample import resample_to_reference
from rice_models.imaging.volume import data_of, load_nifti, make_image, spacing_of, world_coordinates
from rice_models.profiles import PROFILES

from .conftest import affine_from, rigid_matrix

DOSE_PEAK_GY = 60.0
DOSE_CENTRE = np.array([20.0, -10.0, 20.0])


@pytest.fixture(scope="module")
def patient(template_1mm):
    """Post-op: the template on an anisotropic RAS grid; event: a rigidly moved copy on an LPS grid;
    dose: a 60 Gy Gaussian on a 3 mm grid that covers only part of the head."""
    t1 = template_1mm[0]
    postop_grid = make_image(
        np.zeros((96, 112, 60)), affine_from(np.eye(3), (2.0, 2.0, 3.0), (-96, -132, -72))
    )
    postop = resample_to_reference(t1, postop_grid, antialias=True)
    event_grid = make_image(
        np.zeros((64, 76, 64)), affine_from(np.diag([-1.0, -1.0, 1.0]), (3.0, 3.0, 3.0), (95, 100, -80))
    )
    event = resample_to_reference(t1, event_grid, world_transform=rigid_matrix((3, -4, 6), (4, -5, 2)))
    dose_grid = make_image(np.zeros((40, 50, 30)), affine_from(np.eye(3), (3.0, 3.0, 3.0), (-40, -85, -30)))
    r2 = ((world_coordinates(dose_grid) - DOSE_CENTRE) ** 2).sum(-1)
    dose = make_image(DOSE_PEAK_GY * np.exp(-r2 / (2 * 25.0**2)), dose_grid.affine)
    return postop, event, dose


@pytest.fixture(scope="module")
def quick_result(patient):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HDBET_PARAMS_ENV, "/nonexistent/hd-bet-params")
        return preprocess_patient(*patient, PROFILES["quick"])


def test_four_volumes_on_one_grid(quick_result):
    profile = PROFILES["quick"]
    images = quick_result.images()
    assert list(images) == list(CHANNEL_FILES)
    reference = images["mri_postop"]
    for img in images.values():
        assert img.shape == profile.shape
        assert np.allclose(img.affine, reference.affine)
        assert spacing_of(img) == pytest.approx((profile.spacing_mm,) * 3)
    assert set(np.unique(data_of(images["brain_mask"]))) <= {0.0, 1.0}
    assert images["brain_mask"].get_data_dtype() == np.uint8


def test_qc_and_channels(quick_result, patient):
    profile = PROFILES["quick"]
    qc = quick_result.qc
    assert qc["mask_method"] == "ants-template"
    assert qc["ncc_event_postop"] > 0.9 and qc["ncc_ok"]
    assert profile.brain_volume_ml[0] < qc["brain_volume_ml"] < profile.brain_volume_ml[1]
    assert qc["brain_volume_ok"]
    assert not any(qc["nonfinite"].values())
    assert qc["flat_in_brain"] == [] and qc["event_grid_brain_coverage"] == pytest.approx(1.0)
    assert qc["dose_problems"] == []
    assert qc["dose_max_gy"] == pytest.approx(DOSE_PEAK_GY, rel=0.05)
    assert 0.1 < qc["dose_brain_coverage"] < 1.0  # the dose grid covers only part of the brain
    assert qc["registration"]["transforms"] == list(profile.registration)
    mask = data_of(quick_result.brain_mask) > 0
    for name in ("mri_postop", "mri_event"):
        values = data_of(getattr(quick_result, name))
        assert abs(values[mask].mean()) < 0.2 and 0.8 < values[mask].std() < 1.2
        assert np.all(values[~mask] == 0)
    assert ncc(quick_result.mri_postop, quick_result.mri_event, quick_result.brain_mask) > 0.9
    # the dose stays in Gy and where it was in the world
    dose = quick_result.dose
    expected = resample_to_reference(patient[2], dose)
    assert np.allclose(data_of(dose), data_of(expected), atol=1e-4)
    peak = world_coordinates(dose)[np.unravel_index(np.argmax(data_of(dose)), dose.shape)]
    assert np.linalg.norm(peak - DOSE_CENTRE) <= PROFILES["quick"].spacing_mm


def test_timings_and_save(quick_result, tmp_path):
    assert set(quick_result.timings) >= {"resample_postop", "register_event", "brain_mask", "total"}
    paths = quick_result.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}.nii.gz" for n in CHANNEL_FILES
    )
    for name, path in paths.items():
        back = load_nifti(path)
        assert np.allclose(back.affine, quick_result.mri_postop.affine, atol=1e-5)
        assert np.allclose(data_of(back), data_of(quick_result.images()[name]), atol=1e-6)


def test_a_smaller_profile_shape_is_honoured(patient, monkeypatch):
    monkeypatch.setenv(HDBET_PARAMS_ENV, "/nonexistent/hd-bet-params")
    profile = dataclasses.replace(PROFILES["quick"], name="tiny", spacing_mm=8.0, shape=(16, 20, 12))
    result = preprocess_patient(*patient, profile, mask_method="otsu")
    assert {img.shape for img in result.images().values()} == {(16, 20, 12)}
    assert result.qc["mask_method"] == "otsu"


# --- blocking QC ---------------------------------------------------------------------------------

GOOD_QC = {
    "ncc_event_postop": 0.8,
    "brain_volume_ml": 1300.0,
    "mask_method": "ants-template",
    "nonfinite": {"mri_postop": False, "mri_event": False, "dose": False, "brain_mask": False},
    "dose_grid_brain_coverage": 1.0,
    "dose_high_in_brain": 1.0,
    "dose_high_carried": 1.0,
    "dose_problems": [],
    "dose_frame": "coordinates",
}


@pytest.mark.parametrize(
    ("change", "channel", "match"),
    [
        ({}, None, None),
        ({"ncc_event_postop": 0.3}, None, None),  # below ncc_min: a warning, not a refusal
        ({"dose_grid_brain_coverage": 0.0}, "dose", r"covers 0% of the brain.*another frame of reference"),
        ({"dose_grid_brain_coverage": 0.85}, "dose", r"covers 85% of the brain \(minimum 90%\)"),
        ({"dose_problems": ["the dose map is all zero"]}, "dose", r"all zero: likely the dose is in another"),
        ({"dose_high_in_brain": 0.2}, "dose", r"high-dose region lies outside the brain"),
        ({"dose_high_carried": 0.5}, "dose", r"50% of the dose maximum reached"),
        (
            {"dose_grid_brain_coverage": 0.0, "dose_frame": "planning_ct"},
            "dose",
            r"not registered to the planning CT",
        ),
        (
            {"ncc_event_postop": 0.05},
            "mri_event",
            r"NCC 0\.050, refused below 0\.2\): likely another patient",
        ),
        ({"brain_volume_ml": 90.0}, "mri_postop", r"brain mask of 90 ml.*wrong voxel size"),
        ({"brain_volume_ml": 5000.0}, "mri_postop", r"5000 ml"),
        (
            {"event_grid_brain_coverage": 0.6},
            "mri_event",
            r"event MRI covers 60% of the brain \(minimum 90%\)",
        ),
        ({"flat_in_brain": ["mri_event"]}, "mri_event", r"registered event MRI is constant inside the brain"),
        ({"nonfinite": {**GOOD_QC["nonfinite"], "dose": True}}, "mri_postop", r"NaN or Inf in \['dose'\]"),
    ],
)
def test_blocking_problems(change, channel, match):
    problems = blocking_problems({**GOOD_QC, **change}, PROFILES["quick"])
    if match is None:
        assert problems == []
    else:
        assert [c for c, _ in problems] == [channel]
        assert re.search(match, problems[0][1]), problems


def test_an_event_mri_registered_out_of_the_brain_is_flagged_flat(patient, monkeypatch):
    """Registration that leaves the event MRI constant inside the brain (as ANTs sometimes does with a
    noise image) cannot be z-scored: QC flags it so `blocking_problems` refuses it by name."""
    import rice_models.imaging.pipeline as pipeline

    monkeypatch.setenv(HDBET_PARAMS_ENV, "/nonexistent/hd-bet-params")
    real = pipeline.register_rigid_affine

    def out_of_the_head(fixed, moving, **kwargs):
        result = real(fixed, moving, **kwargs)
        return dataclasses.replace(result, image=make_image(np.zeros(fixed.shape), fixed.affine))

    monkeypatch.setattr(pipeline, "register_rigid_affine", out_of_the_head)
    result = preprocess_patient(*patient, PROFILES["quick"])
    assert result.qc["flat_in_brain"] == ["mri_event"]
    assert result.qc["ncc_event_postop"] == 0.0
    assert not data_of(result.images()["mri_event"]).any()
    assert "mri_event" in [c for c, _ in blocking_problems(result.qc, PROFILES["quick"])]


def test_an_event_mri_covering_part_of_the_brain_is_refused(patient, monkeypatch):
    monkeypatch.setenv(HDBET_PARAMS_ENV, "/nonexistent/hd-bet-params")
    postop, event, dose = patient
    slab = event.slicer[:, :, 30:50]  # 60 mm of the 190 mm head
    result = preprocess_patient(postop, slab, dose, PROFILES["quick"])
    assert result.qc["event_grid_brain_coverage"] < 0.6
    assert any(
        c == "mri_event" and "event MRI covers" in r
        for c, r in blocking_problems(result.qc, PROFILES["quick"])
    )


def test_an_ants_failure_names_the_channel(patient, monkeypatch):
    monkeypatch.setenv(HDBET_PARAMS_ENV, "/nonexistent/hd-bet-params")
    postop, event, dose = patient
    blank = make_image(np.zeros(event.shape, dtype=np.float32), event.affine)
    with pytest.raises(RegistrationFailed, match=r"could not register the mri_event to the post-op MRI"):
        preprocess_patient(postop, blank, dose, PROFILES["quick"])
