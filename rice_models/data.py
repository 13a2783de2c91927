"""The training data path: MONAI dict transforms over one patient's channel files, cached once.

An item is a dict `{<channel>: path, ..., "label": int, "patient_id": str}` with one key per channel of
the combination (`make_item`); unlabelled items have no `label`. The deterministic chain loads the
channel files, puts the channel first, scales the dose, concatenates the channels in the fixed order of
`rice_models.channels.CHANNEL_ORDER` into `image` (C, D, H, W) and drops the per-channel keys. A
`CacheDataset` runs it once per patient, so an epoch costs augmentation and compute, not file reads.

Class indices follow `rice_models.labels.LABELS`: 0 = recurrence, 1 = RICE (the positive class;
`predict_proba` reports P(RICE)).

Dose scaling: dose in Gy is divided by `DOSE_REFERENCE_GY` = 60 Gy (the standard glioblastoma
prescription, 60 Gy in 30 fractions), a fixed linear map, so the prescription dose reads ~1 next to
z-scored MRI and dose values keep their physical meaning across patients (no per-patient min-max).

Augmentation (training only, after the cache, on the concatenated image):
- spatial, one resampling of all channels together so they stay aligned: `RandAffined` (rotation
  up to 15 degrees, scaling +-10 %) and an elastic deformation, `RandSmoothDeformd`: random
  displacements on a 5x5x5 control grid (up to 4 % of the image size per axis), upsampled
  trilinearly to the image. Its cost does not grow with the smoothing scale, unlike
  `Rand3DElasticd`'s Gaussian smoothing of a dense random field: at the paper's 224^3, with the
  same ~3 % smoothness of the field of view, that asked the CPU for 62 GB. The dose map moves with
  the anatomy it was planned on;
- intensity, on the MRI channels only, each MRI channel drawn independently (they are two scans):
  Gaussian noise, brightness (`RandScaleIntensity`, `RandShiftIntensity`) and gamma
  (`RandAdjustContrast`). The dose channel's values are never changed: dose is a planned physical
  quantity, not a measured intensity with scanner-dependent contrast and noise, and the dose-volume
  signal it carries must stay in Gy.
"""

import math
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset, get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandAdjustContrast,
    RandAffined,
    RandGaussianNoise,
    Randomizable,
    RandScaleIntensity,
    RandShiftIntensity,
    RandSmoothDeformd,
    ScaleIntensityRanged,
)
from torch.utils.data import WeightedRandomSampler

from rice_models.channels import CHANNEL_ORDER, DOSE_CHANNEL, MRI_CHANNELS, channel_paths
from rice_models.labels import label_index

DOSE_REFERENCE_GY = 60.0
IMAGE_KEY = "image"
LABEL_KEY = "label"
ID_KEY = "patient_id"

ROTATION_RAD = math.radians(15.0)
SCALE_FRACTION = 0.1
AFFINE_PROB = 0.5
ELASTIC_PROB = 0.2
ELASTIC_CONTROL_POINTS = 5
ELASTIC_RANGE = 0.08  # displacement bound in [-1, 1] image coordinates: 4 % of the size
INTENSITY_PROB = 0.15


def make_item(
    patient_id: str, patient_dir: Path, combination: str, label: str | int | None
) -> dict[str, Any]:
    """The data item of one patient for one channel combination.

    Args:
        patient_id: the patient's id (kept through the data path, e.g. to name predictions).
        patient_dir: the patient's `registered_volumes` folder.
        combination: one of `rice_models.channels.COMBINATIONS`.
        label: `rice`/`recurrence` or a class index; None for an unlabelled (predict-only) patient.

    Raises:
        ValueError: unknown combination or label.
    """
    item: dict[str, Any] = {ID_KEY: patient_id}
    item.update({channel: str(path) for channel, path in channel_paths(patient_dir, combination).items()})
    if label is not None:
        item[LABEL_KEY] = label_index(label)
    return item


def item_channels(items: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The channels the items hold, in the fixed order; all items must hold the same ones.

    Args:
        items: data items (see `make_item`).

    Raises:
        ValueError: no items, an item without channels, or items with different channels.
    """
    if not items:
        raise ValueError("no data items")
    kinds = {tuple(c for c in CHANNEL_ORDER if c in item) for item in items}
    if len(kinds) != 1 or not next(iter(kinds)):
        raise ValueError(f"items must all hold the same non-empty channel set; found {sorted(kinds)}")
    return kinds.pop()


def deterministic_transforms(channels: Sequence[str]) -> list[Any]:
    """Load -> channel first -> dose / 60 Gy -> concatenate in the fixed order -> plain float32 tensor.

    Args:
        channels: channel keys of the items, in `CHANNEL_ORDER`.

    Raises:
        ValueError: no channels, unknown channels, or channels out of the fixed order.
    """
    keys = list(channels)
    if not keys or keys != [c for c in CHANNEL_ORDER if c in keys]:
        raise ValueError(f"channels must be distinct names of {CHANNEL_ORDER} in that order; got {keys}")
    with warnings.catch_warnings():  # LoadImage also builds the DICOM fallback reader, which warns
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
        load = LoadImaged(keys=keys, reader="NibabelReader", image_only=True, dtype=np.float32)
    chain: list[Any] = [load, EnsureChannelFirstd(keys=keys, channel_dim="no_channel")]
    if DOSE_CHANNEL in keys:
        chain.append(
            ScaleIntensityRanged(keys=DOSE_CHANNEL, a_min=0.0, a_max=DOSE_REFERENCE_GY, b_min=0.0, b_max=1.0)
        )
    chain += [
        ConcatItemsd(keys=keys, name=IMAGE_KEY, dim=0),
        DeleteItemsd(keys=keys),
        EnsureTyped(keys=IMAGE_KEY, dtype=torch.float32, track_meta=False),
    ]
    return chain


class OnChannelsd(Randomizable, MapTransform):
    """Apply a random array transform to some channels of an image, drawn anew for each channel.

    Args:
        keys: image keys to transform.
        transform: a MONAI random array transform (e.g. `RandGaussianNoise`).
        channels: channel indices it applies to; the other channels are left unchanged.
    """

    def __init__(self, keys: str | Sequence[str], transform: Randomizable, channels: Sequence[int]) -> None:
        MapTransform.__init__(self, keys)
        if not callable(transform):
            raise ValueError(f"transform must be callable, got {transform!r}")
        self.transform = transform
        self.channels = tuple(channels)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> "OnChannelsd":
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen inside the wrapped transform, once per channel."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            image = torch.as_tensor(out[key]).clone()
            for c in self.channels:
                image[c : c + 1] = torch.as_tensor(self.transform(image[c : c + 1]))  # type: ignore[operator]
            out[key] = image
        return out


class ImageToDevice:
    """Move the image to a device (e.g. the GPU) before augmenting it there.

    Deliberately not a MONAI `Transform`: `CacheDataset` stops caching at the first random transform
    or at the first callable that is not a `Transform`, so placed first in the augmentation this keeps
    the cache in host memory and moves each drawn copy.

    Args:
        device: the target device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        out[IMAGE_KEY] = torch.as_tensor(out[IMAGE_KEY]).to(self.device, non_blocking=True)
        return out


def augmentation_transforms(
    channels: Sequence[str], shape: Sequence[int], device: torch.device | None = None
) -> list[Any]:
    """The random training transforms (module docstring): spatial on all channels, intensity on MRI.

    Args:
        channels: channel keys, in `CHANNEL_ORDER` (fixes which image channels are MRI).
        shape: spatial shape of the volumes (the elastic deformation's grid).
        device: where to run the augmentation (a GPU when the data loader has no workers); the image
            is moved there first (MONAI resamples a tensor on its own device).
    """
    chain: list[Any] = [] if device is None else [ImageToDevice(device)]
    chain += [
        RandAffined(
            keys=IMAGE_KEY,
            prob=AFFINE_PROB,
            rotate_range=(ROTATION_RAD,) * 3,
            scale_range=(SCALE_FRACTION,) * 3,
            padding_mode="zeros",
        ),
        RandSmoothDeformd(
            keys=IMAGE_KEY,
            spatial_size=tuple(shape),
            rand_size=(ELASTIC_CONTROL_POINTS,) * len(shape),
            field_mode="trilinear",
            align_corners=True,
            prob=ELASTIC_PROB,
            def_range=ELASTIC_RANGE,
            grid_mode="bilinear",
            grid_padding_mode="zeros",
            device=device,
        ),
    ]
    mri = [i for i, channel in enumerate(channels) if channel in MRI_CHANNELS]
    intensity: list[Randomizable] = [
        RandGaussianNoise(prob=INTENSITY_PROB, std=0.1),
        RandScaleIntensity(factors=0.1, prob=INTENSITY_PROB),
        RandShiftIntensity(offsets=0.1, prob=INTENSITY_PROB),
        RandAdjustContrast(prob=INTENSITY_PROB, gamma=(0.7, 1.5)),
    ]
    if mri:
        chain += [OnChannelsd(IMAGE_KEY, transform, mri) for transform in intensity]
    return chain


def volume_shape(item: Mapping[str, Any]) -> tuple[int, ...]:
    """The spatial shape of an item's volumes, read from the first channel file's header.

    Args:
        item: a data item (`make_item`).
    """
    channel = next(c for c in CHANNEL_ORDER if c in item)
    image: Any = nib.load(item[channel])  # reads the header only
    return tuple(int(n) for n in image.shape[:3])


def cached_dataset(
    items: Sequence[Mapping[str, Any]],
    *,
    augment: bool = False,
    device: torch.device | None = None,
    cache_workers: int = 1,
) -> CacheDataset:
    """A `CacheDataset`: the deterministic chain runs once per item and stays in memory; the
    augmentation (if any) runs on a copy of the cached image at every draw.

    Args:
        items: data items (`make_item`), all of one combination.
        augment: append the random training transforms.
        device: where the augmentation runs (None: the CPU); the cache stays in host memory.
        cache_workers: threads that fill the cache.

    Raises:
        ValueError: no items, or items of different combinations.
    """
    channels = item_channels(items)
    chain = deterministic_transforms(channels)
    if augment:
        chain += augmentation_transforms(channels, volume_shape(items[0]), device)
    return CacheDataset(data=list(items), transform=Compose(chain), num_workers=cache_workers, progress=False)


def uncached_dataset(items: Sequence[Mapping[str, Any]]) -> Dataset:
    """A plain `Dataset` that reads the files on every access (one-off prediction, benchmarks).

    Args:
        items: data items (`make_item`), all of one combination.
    """
    return Dataset(data=list(items), transform=Compose(deterministic_transforms(item_channels(items))))


def class_balanced_sampler(labels: Sequence[int], seed: int) -> WeightedRandomSampler:
    """Draw `len(labels)` samples with replacement, each class equally likely (weights 1/class count).

    Args:
        labels: class index of every dataset item, in dataset order.
        seed: seed of the sampler's own generator.

    Raises:
        ValueError: no labels.
    """
    if len(labels) == 0:
        raise ValueError("cannot sample from an empty dataset")
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y)
    weights = (1.0 / counts[y]).tolist()
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(y), replacement=True, generator=generator)


def train_loader(
    dataset: Dataset, labels: Sequence[int], batch_size: int, seed: int, num_workers: int = 0
) -> DataLoader:
    """The class-balanced training loader; drops a trailing batch of one (batch norm needs two).

    Args:
        dataset: the training dataset (augmenting).
        labels: class index of every dataset item.
        batch_size: samples per batch.
        seed: seed of the sampler.
        num_workers: loader processes (0: in the main process).

    Raises:
        ValueError: batch_size < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sampler = class_balanced_sampler(labels, seed)
    drop_last = len(labels) > batch_size and len(labels) % batch_size == 1
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A loader over the dataset in order (validation, test, prediction).

    Args:
        dataset: the dataset.
        batch_size: samples per batch.
        num_workers: loader processes (0: in the main process).
    """
    return DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False, num_workers=num_workers)


@contextmanager
def plain_tensors() -> Iterator[None]:
    """Run MONAI transforms on plain tensors (no `MetaTensor` bookkeeping), restoring the setting.

    Metadata tracking costs more than the resampling itself at the quick shape; the training path
    needs none of it (the cached image is already a plain tensor on the registered grid).
    """
    before = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(before)
