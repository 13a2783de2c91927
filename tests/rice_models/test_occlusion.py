"""Tests of rice_models.occlusion: planted-region maps, per-channel maps, cost, NIfTI alignment."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from rice_models.ensemble import FoldEnsemble
from rice_models.network import build_network
from rice_models.occlusion import (
    JOINT_KEY,
    load_model_input,
    n_windows,
    occlusion_map,
    occlusion_maps,
    occlusion_peak,
    rice_probability,
    save_occlusion_nifti,
    save_occlusion_result,
)

torch.set_num_threads(2)

SHAPE = (16, 16, 16)
PLANTED = (slice(2, 6),) * 3  # the region the toy fold models read
EMPTY_VOXEL = (12, 12, 12)
PLANTED_VOXEL = (4, 4, 4)
AFFINE = np.array(
    [[0.0, -2.0, 0.0, 30.0], [2.0, 0.0, 0.0, -40.0], [0.0, 0.0, 2.5, 12.0], [0.0, 0.0, 0.0, 1.0]]
)  # rotated, anisotropic, translated: equality cannot hold by accident


class RegionFold(nn.Module):
    """A deterministic 'fold network': RICE logit = gain x (mean of one channel in PLANTED - 0.5)."""

    def __init__(self, gain: float, channel: int = 0) -> None:
        super().__init__()
        self.gain = gain
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x[:, self.channel][(slice(None), *PLANTED)].mean(dim=(1, 2, 3))
        rice = self.gain * (mean - 0.5)
        return torch.stack([torch.zeros_like(rice), rice], dim=1)


def _image() -> torch.Tensor:
    """Channel 0: the planted signal; channel 1: a bright blob elsewhere that the models ignore."""
    image = torch.zeros(2, *SHAPE)
    image[(0, *PLANTED)] = 1.0
    image[1, 10:14, 10:14, 10:14] = 1.0
    return image


def _ensemble(sign: float = 1.0) -> FoldEnsemble:
    return FoldEnsemble([RegionFold(4.0 * sign), RegionFold(6.0 * sign)], combination="postop+dose")


def test_planted_region_lowers_p_rice_more_than_an_empty_region() -> None:
    ensemble = _ensemble()
    occ = occlusion_map(ensemble, _image(), mask_size=4, overlap=0.5)
    assert occ.shape == SHAPE and occ.dtype == np.float32
    assert rice_probability(ensemble, _image()) > 0.8
    assert occ[PLANTED_VOXEL] > 0.1  # positive drop: the region supports RICE
    assert abs(occ[EMPTY_VOXEL]) < 1e-6
    assert occ[PLANTED_VOXEL] > occ[EMPTY_VOXEL] + 0.1
    assert all(2 <= i < 6 for i in occlusion_peak(occ))


def test_region_supporting_recurrence_has_a_negative_drop() -> None:
    occ = occlusion_map(_ensemble(sign=-1.0), _image(), mask_size=4, overlap=0.5)
    assert occ[PLANTED_VOXEL] < -0.1
    assert occlusion_peak(occ) == occlusion_peak(-occ)


def test_per_channel_maps_show_which_channel_carries_the_decision() -> None:
    result = occlusion_maps(_ensemble(), _image(), ["mri_postop", "dose"], mask_size=4, overlap=0.5)
    assert list(result.maps) == [JOINT_KEY, "mri_postop", "dose"]
    assert result.maps["mri_postop"][PLANTED_VOXEL] > 0.1
    assert np.abs(result.maps["dose"]).max() < 1e-6  # the blob of channel 1 never matters
    np.testing.assert_allclose(result.maps[JOINT_KEY], result.maps["mri_postop"], atol=1e-6)
    assert result.seconds > 0 and result.n_windows == n_windows(SHAPE, 4, 0.5) == 7**3
    json.dumps(result.summary())


def test_per_channel_occludes_only_its_channel() -> None:
    """With the signal on channel 1, occluding channel 0 (whatever lies there) changes nothing."""
    ensemble = FoldEnsemble([RegionFold(5.0, channel=1)])
    image = _image().flip(0)  # signal now on channel 1, blob on channel 0
    image[(0, *PLANTED)] = 3.0  # channel 0 is bright in the very region the model reads on channel 1
    assert np.abs(occlusion_map(ensemble, image, channel=0, mask_size=4)).max() < 1e-6
    assert occlusion_map(ensemble, image, channel=1, mask_size=4)[PLANTED_VOXEL] > 0.1


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]
        return torch.full((x.shape[0],), 0.5)


@pytest.mark.parametrize(("mask", "overlap"), [(4, 0.5), (5, 0.6), ((3, 4, 8), 0.0)])
def test_cost_is_bounded_by_mask_and_overlap(mask: int | tuple[int, ...], overlap: float) -> None:
    model = Counting()
    occlusion_map(model, torch.zeros(1, *SHAPE), mask_size=mask, overlap=overlap, n_batch=16)
    assert model.calls - 1 == n_windows(SHAPE, mask, overlap)  # one baseline pass


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mask_size": 17},
        {"mask_size": 0},
        {"overlap": 1.0},
        {"mode": "noise"},
        {"n_batch": 0},
        {"channel": 2},
    ],
)
def test_occlusion_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        occlusion_map(_ensemble(), _image(), **kwargs)  # type: ignore[arg-type]


def test_occlusion_maps_reject_mismatched_channel_names() -> None:
    with pytest.raises(ValueError):
        occlusion_maps(_ensemble(), _image(), ["mri_postop"])
    with pytest.raises(ValueError):
        occlusion_maps(_ensemble(), _image(), ["mri_postop", JOINT_KEY])


def _registered_volumes(folder: Path) -> Path:
    """A patient's registered_volumes folder: the planted image as post-op MRI, dose in Gy."""
    image = _image().numpy()
    folder.mkdir(parents=True)
    for name, data in (("mri_postop", image[0]), ("dose", image[1] * 60.0), ("mri_event", image[0] * 0)):
        nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), folder / f"{name}.nii.gz")
    return folder


def _nifti(path: Path) -> nib.Nifti1Image:
    img = nib.load(path)
    assert isinstance(img, nib.Nifti1Image)
    return img


def test_maps_of_registered_volumes_are_saved_aligned(tmp_path: Path) -> None:
    patient = _registered_volumes(tmp_path / "registered_volumes" / "P1")
    x = load_model_input(patient, "postop+dose")
    assert x.shape == (2, *SHAPE)
    torch.testing.assert_close(x, _image())  # dose / 60 Gy
    result = occlusion_maps(_ensemble(), x, ["mri_postop", "dose"], mask_size=8, overlap=0.0)
    affine = _nifti(patient / "mri_postop.nii.gz").affine
    paths = save_occlusion_result(result, affine, tmp_path / "occlusion_maps" / "P1")
    assert sorted(p.name for p in paths.values()) == [
        "occlusion_all.nii.gz",
        "occlusion_dose.nii.gz",
        "occlusion_mri_postop.nii.gz",
    ]
    saved = _nifti(paths[JOINT_KEY])
    np.testing.assert_allclose(saved.affine, affine)
    assert saved.shape == SHAPE
    np.testing.assert_allclose(np.asarray(saved.dataobj), result.maps[JOINT_KEY])
    assert not list(paths[JOINT_KEY].parent.glob(".*tmp*"))  # atomic write left no temp file


def test_save_occlusion_nifti_rejects() -> None:
    with pytest.raises(ValueError):
        save_occlusion_nifti(np.zeros((4, 4)), AFFINE, Path("x.nii.gz"))
    with pytest.raises(ValueError):
        save_occlusion_nifti(np.zeros((4, 4, 4)), AFFINE, Path("x.png"))


def test_occlusion_of_a_monai_resnet_ensemble() -> None:
    torch.manual_seed(0)
    ensemble = FoldEnsemble([build_network(2, conv1_t_stride=2) for _ in range(2)], "postop+dose")
    occ = occlusion_map(ensemble, torch.randn(2, *SHAPE), mask_size=8, overlap=0.0, n_batch=8)
    assert occ.shape == SHAPE and np.all(np.isfinite(occ))
    assert not ensemble.training


def test_the_peak_is_the_centre_of_the_peak_region_not_its_corner() -> None:
    occ = np.zeros((16, 16, 16), dtype=np.float32)
    occ[4:12, 0:8, 8:16] = 0.3  # one occluded 8-voxel cube holds the largest drop
    occ[12:16, 12:16, 0:4] = -0.1
    peak = occlusion_peak(occ)  # argmax alone gives the corner (4, 0, 8)
    assert all(abs(c - m) <= 0.5 for c, m in zip(peak, (7.5, 3.5, 11.5), strict=True)), peak
    occ[0, 0, 0] = -0.3  # an equal |drop| elsewhere, not connected: the first region wins
    assert occlusion_peak(occ) == (0, 0, 0)
