"""Benchmark of the training data path (a script that prints figures; not a test).

    .venv/bin/python benchmarks/training.py [--patients 24] [--size 32] [--epochs 3]

Writes a synthetic cohort of NIfTI files to a temporary folder and times one training epoch of the
quick profile (ResNet-18, conv1 stride 2, batch 4, three channels) four ways:

- cached: the real path (`CacheDataset` + augmentation + class-balanced sampler from the files);
- memory: the same sampler order and training steps on tensors already stacked in memory, no
  augmentation (pure compute); `memory+aug` adds the same augmentation per sample;
- naive: a plain `Dataset` that reads and decodes the NIfTI files at every access.

Ratios: cached / memory (target <= 1.1: an epoch costs compute, not file reads), cached / memory+aug
(the data path's own overhead once augmentation is counted as compute), and the naive path's data
time over the cached path's (the speed-up of caching).
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose

from rice_models.data import (
    IMAGE_KEY,
    LABEL_KEY,
    augmentation_transforms,
    cached_dataset,
    deterministic_transforms,
    make_item,
    plain_tensors,
    train_loader,
)
from rice_models.network import build_network
from rice_models.profiles import get_profile
from rice_models.training import deterministic, train_epoch, train_fold

COMBINATION = "postop+event+dose"
CHANNELS = ("mri_postop", "mri_event", "dose")


def write_cohort(root: Path, n: int, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` synthetic patients (noise MRI, a dose blob whose height depends on the label)."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3, dtype=np.float32)
    items = []
    for i in range(n):
        label = ("rice", "recurrence")[i % 2]
        centre = rng.uniform(0.35 * size, 0.65 * size, size=3)
        blob = np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / (2 * (size / 6) ** 2))
        volumes = {
            "mri_postop": rng.normal(size=(size,) * 3),
            "mri_event": rng.normal(size=(size,) * 3),
            "dose": (60.0 if label == "rice" else 30.0) * blob,
        }
        folder = root / f"P{i:03d}"
        folder.mkdir(parents=True)
        for channel, data in volumes.items():
            nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4) * 5.0), folder / f"{channel}.nii.gz")
        items.append(make_item(folder.name, folder, COMBINATION, label))
    return items


def timed(run: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` runs after one warm-up run."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Trainer:
    """One model + optimiser; `epoch(batches)` runs the real training step over any batch iterable."""

    def __init__(self, batch_size: int) -> None:
        self.model = build_network(len(CHANNELS), conv1_t_stride=2)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=True)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.batch_size = batch_size

    def epoch(self, batches: Iterable[dict[str, Any]]) -> None:
        train_epoch(self.model, batches, self.optimiser, self.scaler, torch.device("cpu"), False)


def memory_batches(
    images: torch.Tensor, labels: torch.Tensor, order: list[int], batch_size: int, augment: Callable | None
) -> list[dict[str, Any]]:
    """Batches in a given sample order from tensors in memory (optionally augmenting each sample)."""
    out = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        x = images[idx]
        if augment is not None:
            x = torch.stack([augment({IMAGE_KEY: sample})[IMAGE_KEY] for sample in x])
        out.append({IMAGE_KEY: x, LABEL_KEY: labels[idx]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant (after a warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--fit", action="store_true", help="also train one quick-profile cell with train_fold"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp, deterministic(0), plain_tensors():
        t0 = time.perf_counter()
        items = write_cohort(Path(tmp), args.patients, args.size)
        print(
            f"wrote {args.patients} patients x 3 channels at {args.size}^3: {time.perf_counter() - t0:.1f} s"
        )
        run(items, args)
        if args.fit:
            fit(Path(tmp) / "fit", args)


def run(items: list[dict[str, Any]], args: argparse.Namespace) -> None:
    labels = [int(item[LABEL_KEY]) for item in items]
    bs, n = args.batch_size, len(items)
    t0 = time.perf_counter()
    cached = cached_dataset(items, augment=True)
    fill = time.perf_counter() - t0
    loader = train_loader(cached, labels, bs, seed=0)
    naive = Dataset(list(items), Compose(deterministic_transforms(CHANNELS)))
    naive_aug = Dataset(
        list(items),
        Compose([*deterministic_transforms(CHANNELS), *augmentation_transforms(CHANNELS, (args.size,) * 3)]),
    )
    naive_loader = train_loader(naive_aug, labels, bs, seed=0)
    images = torch.stack([naive[i][IMAGE_KEY] for i in range(n)])
    y = torch.tensor(labels)
    order = list(loader.sampler)
    augment = Compose(augmentation_transforms(CHANNELS, (args.size,) * 3))
    trainer = Trainer(bs)

    data_cached = timed(lambda: sum(1 for _ in loader), args.epochs)
    data_naive = timed(lambda: sum(1 for _ in naive_loader), args.epochs)
    data_memory_aug = timed(lambda: memory_batches(images, y, order, bs, augment), args.epochs)
    epoch_cached = timed(lambda: trainer.epoch(loader), args.epochs)
    epoch_memory = timed(lambda: trainer.epoch(memory_batches(images, y, order, bs, None)), args.epochs)
    epoch_memory_aug = timed(
        lambda: trainer.epoch(memory_batches(images, y, order, bs, augment)), args.epochs
    )
    epoch_naive = timed(lambda: trainer.epoch(naive_loader), args.epochs)

    samples = (n // bs) * bs
    print(f"cache fill (once per fold):          {fill:7.3f} s")
    print("data only, one epoch (no model):")
    print(f"  naive NIfTI loading + augmentation {data_naive:7.3f} s")
    print(
        f"  cached + augmentation              {data_cached:7.3f} s   x{data_naive / data_cached:.1f} faster"
    )
    print(f"  memory + augmentation              {data_memory_aug:7.3f} s")
    print(f"training epoch ({samples} samples, batch {bs}):")
    print(f"  memory tensors, no augmentation    {epoch_memory:7.3f} s")
    print(f"  memory tensors + augmentation      {epoch_memory_aug:7.3f} s")
    print(f"  cached path (real)                 {epoch_cached:7.3f} s")
    print(f"  naive NIfTI path                   {epoch_naive:7.3f} s")
    print("ratios:")
    print(f"  cached / memory                    {epoch_cached / epoch_memory:7.3f}   (target <= 1.1)")
    print(f"  cached / (memory + augmentation)   {epoch_cached / epoch_memory_aug:7.3f}")
    print(f"  naive / cached (whole epoch)       {epoch_naive / epoch_cached:7.3f}")
    print(f"samples per second (cached path, training): {samples / epoch_cached:.1f}")


def fit(root: Path, args: argparse.Namespace) -> None:
    """One cell of the quick profile: `train_fold` on `--patients` training + 8 validation patients."""
    items = write_cohort(root, args.patients + 8, args.size, seed=1)
    profile = get_profile("quick", shape=(args.size,) * 3, batch_size=args.batch_size)
    result = train_fold(items[: args.patients], items[args.patients :], profile, device="cpu")
    curve = " ".join(f"{r.val_macro_f1:.2f}" if r.validated else "-" for r in result.history)
    settings = f"{profile.epochs} epochs at lr {profile.learning_rate}"
    print(f"train_fold, quick profile, {settings}: {result.seconds:.1f} s")
    print(f"  val macro F1 per epoch: {curve}")
    print(f"  best epoch {result.best_epoch}: val macro F1 {result.best.val_macro_f1:.3f}")


if __name__ == "__main__":
    main()
