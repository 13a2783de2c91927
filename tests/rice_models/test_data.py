"""Channels, the cached data path, the class-balanced sampler and channel-aligned augmentation."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Transform

from rice_models.channels import COMBINATIONS, FOLDS, channel_paths, channels_of, combination_of, fold_keys
from rice_models.data import (
    DOSE_REFERENCE_GY,
    IMAGE_KEY,
    ImageToDevice,
    augmentation_transforms,
    cached_dataset,
    class_balanced_sampler,
    label_index,
    make_item,
    plain_tensors,
    train_loader,
)

torch.set_num_threads(min(2, torch.get_num_threads()))


def write_patient(folder: Path, volumes: dict[str, np.ndarray]) -> Path:
    """Write one patient's `registered_volumes` folder (float32 NIfTI, 2 mm grid)."""
    folder.mkdir(parents=True, exist_ok=True)
    for channel, data in volumes.items():
        nib.save(
            nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
            folder / f"{channel}.nii.gz",
        )
    return folder


def blob_patient(folder: Path, rng: np.random.Generator, label: str, n: int = 16) -> Path:
    """Noise MRI; a 60 Gy dose blob for RICE, none for recurrence (the planted signal)."""
    grid = np.indices((n, n, n), dtype=np.float32)
    centre = rng.uniform(0.35 * n, 0.65 * n, size=3)
    r2 = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0)
    blob = DOSE_REFERENCE_GY * np.exp(-r2 / (2 * (n / 6) ** 2)) if label == "rice" else np.zeros((n, n, n))
    return write_patient(
        folder,
        {
            "mri_postop": rng.normal(size=(n, n, n)),
            "mri_event": rng.normal(size=(n, n, n)),
            "dose": blob + rng.normal(0.0, 1.0, size=(n, n, n)),
            "brain_mask": np.ones((n, n, n)),
        },
    )


@pytest.mark.parametrize(
    ("combination", "expected"),
    [
        ("postop", ("mri_postop",)),
        ("event", ("mri_event",)),
        ("dose", ("dose",)),
        ("postop+event", ("mri_postop", "mri_event")),
        ("postop+dose", ("mri_postop", "dose")),
        ("event+dose", ("mri_event", "dose")),
        ("postop+event+dose", ("mri_postop", "mri_event", "dose")),
    ],
)
def test_channels_of_each_combination(combination: str, expected: tuple[str, ...]) -> None:
    assert channels_of(combination) == expected
    assert combination_of(list(reversed(expected))) == combination
    assert list(channel_paths(Path("/lake/P1"), combination)) == list(expected)


@pytest.mark.parametrize("bad", ["dose+postop", "t1", "", "postop+postop"])
def test_unknown_combination_fails(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown channel combination"):
        channels_of(bad)


def test_combination_and_fold_keys() -> None:
    assert len(COMBINATIONS) == 7 and FOLDS == ("0", "1", "2", "3", "4")
    assert fold_keys(3) == ("0", "1", "2")
    with pytest.raises(ValueError):
        fold_keys(1)
    with pytest.raises(ValueError):
        combination_of(["dose", "t2"])


def test_labels_and_items(tmp_path: Path) -> None:
    assert (label_index("recurrence"), label_index("rice"), label_index(1)) == (0, 1, 1)
    for bad in ("benign", 2):
        with pytest.raises(ValueError):
            label_index(bad)
    item = make_item("P1", tmp_path / "P1", "event+dose", "rice")
    assert item == {
        "patient_id": "P1",
        "mri_event": str(tmp_path / "P1" / "mri_event.nii.gz"),
        "dose": str(tmp_path / "P1" / "dose.nii.gz"),
        "label": 1,
    }
    assert "label" not in make_item("P2", tmp_path / "P2", "dose", None)


def test_channels_in_fixed_order_dose_scaled_and_cached_once(tmp_path: Path) -> None:
    shape = (8, 8, 8)
    folder = write_patient(
        tmp_path / "P1",
        {"mri_postop": np.full(shape, 1.0), "mri_event": np.full(shape, 2.0), "dose": np.full(shape, 30.0)},
    )
    with plain_tensors():
        dataset = cached_dataset([make_item("P1", folder, "postop+event+dose", "rice")])
        for path in folder.iterdir():
            path.unlink()  # served from memory from now on
        sample = dataset[0]
    image = sample[IMAGE_KEY]
    assert type(image) is torch.Tensor and image.dtype == torch.float32
    assert image.shape == (3, *shape)
    assert image.mean(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 2.0, 30.0 / DOSE_REFERENCE_GY])
    assert sample["label"] == 1 and sample["patient_id"] == "P1"
    assert set(sample) == {IMAGE_KEY, "label", "patient_id"}


def test_sampler_balances_an_imbalanced_set() -> None:
    labels = [0] * 90 + [1] * 10
    sampler = class_balanced_sampler(labels, seed=5)
    drawn = np.array([labels[i] for _ in range(30) for i in sampler])
    assert len(drawn) == 30 * len(labels)
    assert drawn.mean() == pytest.approx(0.5, abs=0.03)
    assert list(class_balanced_sampler(labels, seed=5)) == list(class_balanced_sampler(labels, seed=5))
    with pytest.raises(ValueError):
        class_balanced_sampler([], seed=0)


def test_trailing_batch_of_one_is_dropped(tmp_path: Path) -> None:
    assert train_loader(list(range(9)), [0, 1] * 4 + [0], 4, seed=0).drop_last  # type: ignore[arg-type]
    assert not train_loader(list(range(8)), [0, 1] * 4, 4, seed=0).drop_last  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        train_loader(list(range(8)), [0, 1] * 4, 0, seed=0)  # type: ignore[arg-type]


def _cube_image(n: int = 24) -> torch.Tensor:
    """Three channels (MRI, MRI, dose/60) sharing one bright off-centre cube."""
    cube = torch.zeros(n, n, n)
    cube[5:13, 7:15, 9:17] = 1.0
    return torch.stack([3.0 * cube, 2.0 * cube, cube])


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spatial_augmentation_moves_all_channels_together(seed: int) -> None:
    image = _cube_image()
    spatial = augmentation_transforms(("mri_postop", "mri_event", "dose"), image.shape[1:])[:2]
    with plain_tensors():
        out = image
        for transform in spatial:
            transform.prob = 1.0
            transform.set_random_state(seed)
            out = transform({IMAGE_KEY: out})[IMAGE_KEY]
    masks = [out[c] > 0.5 * image[c].max() for c in range(3)]
    assert _dice(masks[0], image[0] > 0) < 0.95  # it did move
    assert _dice(masks[0], masks[1]) > 0.99 and _dice(masks[0], masks[2]) > 0.99


@pytest.mark.parametrize("shape", [(24, 24, 24), (224, 224, 224)])
def test_elastic_deformation_keeps_channels_aligned_and_fits_paper_volumes(shape: tuple[int, ...]) -> None:
    elastic = augmentation_transforms(("mri_postop", "mri_event", "dose"), shape)[1]
    elastic.prob = 1.0
    elastic.set_random_state(0)
    image = _cube_image() if shape[0] == 24 else torch.zeros(3, *shape)  # 224^3: Rand3DElasticd asked 62 GB
    with plain_tensors():
        out = elastic({IMAGE_KEY: image})[IMAGE_KEY]
    assert out.shape == image.shape
    if shape[0] == 24:
        masks = [out[c] > 0.5 * image[c].max() for c in range(3)]
        assert 0.8 < _dice(masks[0], image[0] > 0) < 0.99  # it moved, a little
        assert _dice(masks[0], masks[1]) > 0.99 and _dice(masks[0], masks[2]) > 0.99


def test_intensity_augmentation_leaves_the_dose_alone() -> None:
    image = _cube_image() + 0.1 * torch.randn(3, 24, 24, 24)
    intensity = augmentation_transforms(("mri_postop", "mri_event", "dose"), image.shape[1:])[2:]
    assert len(intensity) == 4
    with plain_tensors():
        out = image
        for transform in intensity:
            transform.transform.prob = 1.0
            transform.set_random_state(3)
            out = transform({IMAGE_KEY: out})[IMAGE_KEY]
    assert torch.equal(out[2], image[2])
    assert not torch.allclose(out[0], image[0]) and not torch.allclose(out[1], image[1])
    assert augmentation_transforms(("dose",), (8, 8, 8))[2:] == []  # dose only: spatial only


def test_device_move_comes_after_the_cache(tmp_path: Path) -> None:
    folder = blob_patient(tmp_path / "P0", np.random.default_rng(0), "rice")
    with plain_tensors():
        dataset = cached_dataset(
            [make_item("P0", folder, "dose", 1)], augment=True, device=torch.device("cpu")
        )
        assert dataset[0][IMAGE_KEY].shape == (1, 16, 16, 16)
    first_uncached = dataset.transform.get_index_of_first(lambda t: not isinstance(t, Transform))
    assert isinstance(dataset.transform.transforms[first_uncached], ImageToDevice)


def test_augmenting_dataset_is_seeded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    items = [
        make_item(f"P{i}", blob_patient(tmp_path / f"P{i}", rng, "rice"), "postop+dose", 1) for i in range(2)
    ]

    def draws(seed: int) -> list[torch.Tensor]:
        with plain_tensors():
            dataset = cached_dataset(items, augment=True)
            dataset.transform.set_random_state(seed)
            return [dataset[i % 2][IMAGE_KEY] for i in range(6)]

    first, again = draws(4), draws(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert first[0].shape == (2, 16, 16, 16)
