import sys
import types

import numpy as np
import pytest

from rice_models.imaging import brain_mask as bm
from rice_models.imaging.volume import data_of, load_nifti, make_image, save_nifti, voxel_volume_ml


def volume_ml(mask) -> float:
    return float((data_of(mask) > 0).sum()) * voxel_volume_ml(mask)


@pytest.fixture
def no_hd_bet(monkeypatch, tmp_path):
    monkeypatch.setenv(bm.HDBET_PARAMS_ENV, str(tmp_path / "no-params"))


def test_template_mask_is_plausible(template_1mm):
    t1, brain = template_1mm
    assert t1.shape == brain.shape == (197, 233, 189)
    assert 1000 < volume_ml(brain) < 1800
    assert set(np.unique(data_of(brain))) == {0.0, 1.0}


@pytest.mark.parametrize(("method", "low", "high"), [("auto", 1000, 1800), ("ants-template", 1000, 1800)])
def test_fallback_mask_on_the_template(no_hd_bet, template_coarse, template_coarse_mask, method, low, high):
    mask, used = bm.brain_mask(template_coarse, method=method, seed=1)
    assert used == "ants-template"
    assert mask.shape == template_coarse.shape and np.allclose(mask.affine, template_coarse.affine)
    assert mask.get_data_dtype() == np.uint8
    assert low < volume_ml(mask) < high
    truth = data_of(template_coarse_mask) > 0
    found = data_of(mask) > 0
    dice = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    assert dice > 0.9


def test_otsu_mask_on_a_skull_stripped_image(template_coarse):
    mask, used = bm.brain_mask(template_coarse, method="otsu")
    assert used == "otsu"
    assert 1000 < volume_ml(mask) < 2200


def test_otsu_threshold_separates_two_classes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 1, 5000), rng.normal(50, 2, 5000)])
    threshold = bm.otsu_threshold(values)
    assert (values > threshold).sum() == 5000 and values[5000:].min() > threshold
    with pytest.raises(ValueError, match="non-constant"):
        bm.otsu_threshold(np.ones(10))


def test_hd_bet_parameters_are_located_not_downloaded(monkeypatch, tmp_path):
    folder = tmp_path / "release_2.0.0"
    monkeypatch.setenv(bm.HDBET_PARAMS_ENV, str(folder))
    assert bm.hd_bet_parameter_folder() == folder
    assert not bm.hd_bet_available()
    for name in bm.HD_BET_REQUIRED_FILES[:-1]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    assert not bm.hd_bet_available()  # the checkpoint is still missing
    checkpoint = folder / bm.HD_BET_REQUIRED_FILES[-1]
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    assert bm.hd_bet_available()
    assert not list(tmp_path.glob("*.zip"))


def test_hd_bet_default_folder_is_hd_bets_own(monkeypatch):
    monkeypatch.delenv(bm.HDBET_PARAMS_ENV, raising=False)
    from HD_BET.paths import folder_with_parameter_files

    assert str(bm.hd_bet_parameter_folder()) == folder_with_parameter_files


def test_auto_uses_hd_bet_when_available(monkeypatch, template_coarse):
    monkeypatch.setattr(bm, "hd_bet_available", lambda: True)
    sentinel = make_image(np.ones(template_coarse.shape), template_coarse.affine, dtype=np.uint8)
    monkeypatch.setattr(bm, "_hd_bet_mask", lambda img: sentinel)
    assert bm.brain_mask(template_coarse) == (sentinel, "hd-bet")


@pytest.mark.parametrize(
    ("method", "error", "match"),
    [("bet", ValueError, "mask method"), ("hd-bet", RuntimeError, "HD-BET parameters not found")],
)
def test_brain_mask_refuses(no_hd_bet, template_coarse, method, error, match):
    with pytest.raises(error, match=match):
        bm.brain_mask(template_coarse, method=method)


def test_hd_bet_glue_with_a_stand_in_network(monkeypatch, template_coarse):
    """The HD-BET call (file names, grid, binarisation) with nnU-Net and HD-BET replaced by stand-ins."""
    calls = {}

    class FakePredictor:
        def __init__(self, **kwargs):
            calls["predictor"] = kwargs

        def initialize_from_trained_model_folder(self, folder, folds):
            calls["folder"], calls["folds"] = folder, folds

    def fake_predict(source, output, predictor, keep_brain_mask, compute_brain_extracted_image):
        calls["flags"] = (keep_brain_mask, compute_brain_extracted_image)
        img = load_nifti(source)
        mask = make_image(data_of(img) > 0.2, img.affine, dtype=np.uint8)
        save_nifti(mask, output[: -len(".nii.gz")] + "_bet.nii.gz", dtype=np.uint8)

    monkeypatch.setitem(
        sys.modules, "HD_BET.hd_bet_prediction", types.SimpleNamespace(hdbet_predict=fake_predict)
    )
    monkeypatch.setitem(
        sys.modules,
        "nnunetv2.inference.predict_from_raw_data",
        types.SimpleNamespace(nnUNetPredictor=FakePredictor),
    )
    monkeypatch.setattr(bm, "hd_bet_available", lambda: True)
    monkeypatch.setenv(bm.HDBET_PARAMS_ENV, "/params/release_2.0.0")
    mask, used = bm.brain_mask(template_coarse, method="hd-bet")
    assert used == "hd-bet"
    assert calls["folder"] == "/params/release_2.0.0" and calls["folds"] == "all"
    assert calls["flags"] == (True, False)
    assert np.allclose(mask.affine, template_coarse.affine) and mask.shape == template_coarse.shape
    assert np.array_equal(data_of(mask) > 0, data_of(template_coarse) > 0.2)


def test_fallback_mask_on_a_full_head_scan_excludes_skull_and_scalp(no_hd_bet, tmp_path):
    """The synthetic post-op scan has CSF, skull and scalp around the MNI brain (~1.75 l of tissue)."""
    from rice_models.imaging.resample import resample_isotropic
    from rice_models.synth import generate_cohort

    generate_cohort(tmp_path, n_patients=1, seed=5, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    head = resample_isotropic(load_nifti(tmp_path / "SYN-0001" / "mri_postop.nii.gz"), 5.0)
    mask, used = bm.brain_mask(head, seed=1)
    assert used == "ants-template"
    assert 1500 < volume_ml(mask) < 2150
