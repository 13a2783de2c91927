"""Training of one fold model (one cell of the combination x fold grid), framework-free.

`train_fold` trains `build_network` with cross-entropy, Adam and the class-balanced sampler on the
cached data path of `rice_models.data` for the profile's fixed number of epochs, validates every
`profile.validation_interval` epochs and after the last one, and keeps the weights of the last epoch.

Why the last epoch (a fixed epoch count): the fold model's validation predictions are then out-of-fold
predictions of a model chosen before its validation patients were seen, so pooled over the folds they
are an honest estimate, fit to choose the champion on. Keeping the epoch with the best validation F1, as
the study does, maximises a figure over epochs on the very patients that then report it: optimistic
on 13-16 patients a fold. That figure is still recorded, as the study reports it (`best_epoch`,
`best_val_macro_f1`): the validated epoch with the highest validation macro F1; among epochs with the
same macro F1, the lower validation cross-entropy; among those, the earlier epoch (`is_better`).

Macro F1 is sklearn's `f1_score(average="macro", labels=[0, 1], zero_division=0)`: both classes always
count, so a validation fold that lacks a class scores at most 0.5 (`make_splits` notes such folds).

Device: CUDA when available (mixed precision with `torch.autocast` + `GradScaler` if `profile.amp`),
else the CPU; the device used is recorded. Seeds: `monai.utils.set_determinism(seed)` (torch, numpy,
python and cuDNN; `seed` defaults to `profile.train_seed`, the pipeline passes one derived from the
cell, `rice_models.experiment.fold_seed`), the sampler's generator and MONAI's transform seeds derive from it,
and `torch.use_deterministic_algorithms(True, warn_only=True)` holds during training (restored after).
On the CPU with `num_workers=0` a run is repeatable bit for bit; on CUDA it is seeded but not
bit-identical, as `max_pool3d`'s backward pass has no deterministic CUDA kernel (torch warns).
"""

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.networks.nets import ResNet
from monai.utils import set_determinism
from sklearn.metrics import f1_score
from torch import nn

from rice_models.data import (
    IMAGE_KEY,
    LABEL_KEY,
    cached_dataset,
    eval_loader,
    item_channels,
    plain_tensors,
    train_loader,
    uncached_dataset,
)
from rice_models.labels import CLASS_INDICES, RICE_INDEX
from rice_models.network import build_network
from rice_models.profiles import Profile

F1_TIE_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """Figures of one epoch (epochs count from 1); `val_*` are None when the epoch was not validated."""

    epoch: int
    train_loss: float
    val_macro_f1: float | None
    val_loss: float | None
    seconds: float

    @property
    def validated(self) -> bool:
        return self.val_macro_f1 is not None


EpochCallback = Callable[[EpochRecord], None]


@dataclasses.dataclass
class FoldResult:
    """A trained fold model: the last epoch's weights and how it got there.

    Args:
        state_dict: weights of the last epoch (CPU tensors).
        channels: input channels, in the fixed order.
        conv1_t_stride: stride of the first convolution (rebuilds the architecture).
        widen_factor: width multiplier of the blocks (rebuilds the architecture).
        history: one record per epoch (validation figures on the validated epochs only).
        best_epoch: the validated epoch with the best validation macro F1 (1-based; the study's figure,
            reported).
        device: the device trained on (`cpu`, `cuda:0`, ...).
        amp: whether mixed precision was used.
        seconds: wall time of the whole fit (cache fill included).
        n_train: number of training patients.
        val_patient_ids: validation patients, in the order of `val_probabilities`.
        val_labels: their class indices.
        val_probabilities: P(RICE) of the kept (last-epoch) model for each validation patient: its
            out-of-fold predictions.
        seed: the training seed used.
    """

    state_dict: dict[str, torch.Tensor]
    channels: tuple[str, ...]
    conv1_t_stride: int
    widen_factor: float
    history: list[EpochRecord]
    best_epoch: int
    device: str
    amp: bool
    seconds: float
    n_train: int
    val_patient_ids: tuple[str, ...]
    val_labels: tuple[int, ...]
    val_probabilities: tuple[float, ...]
    seed: int = 0

    @property
    def n_input_channels(self) -> int:
        return len(self.channels)

    @property
    def best(self) -> EpochRecord:
        """The record of the epoch with the best validation macro F1 (the study's figure)."""
        return self.history[self.best_epoch - 1]

    @property
    def final(self) -> EpochRecord:
        """The record of the last epoch, whose weights are kept."""
        return self.history[-1]

    def build_model(self) -> ResNet:
        """The kept (last-epoch) model, on the CPU, in evaluation mode."""
        model = build_network(self.n_input_channels, self.conv1_t_stride, self.widen_factor)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no weights): for catalog metadata and run records."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "state_dict"}
        out["best_val_macro_f1"] = self.best.val_macro_f1
        out["best_val_loss"] = self.best.val_loss
        out["final_val_macro_f1"] = self.final.val_macro_f1
        out["kept_epoch"] = len(self.history)
        return out


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: `device` if given, else CUDA when available, else the CPU.

    Args:
        device: e.g. `"cpu"`, `"cuda"`, `"cuda:1"`; None picks automatically.

    Raises:
        ValueError: CUDA requested but not available.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed everything and demand deterministic kernels (warning where torch has none) for a block.

    Args:
        seed: seed for torch, numpy, python and MONAI transforms.
    """
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    set_determinism(seed=seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _check_settings(
    profile: Profile, train_items: Sequence[Mapping[str, Any]], val_items: Sequence[Any]
) -> None:
    if profile.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {profile.epochs}")
    if profile.validation_interval < 1:
        raise ValueError(f"validation_interval must be at least 1, got {profile.validation_interval}")
    if profile.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {profile.batch_size}")
    if not profile.learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {profile.learning_rate}")
    if not val_items:
        raise ValueError("no validation items: model selection needs a validation set")
    unlabelled = [item.get("patient_id") for item in (*train_items, *val_items) if LABEL_KEY not in item]
    if unlabelled:
        raise ValueError(f"training and validation items need labels; unlabelled: {unlabelled}")


def _autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp)


def train_epoch(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp: bool,
) -> float:
    """One pass over the batches (cross-entropy, one optimiser step each); the mean loss per sample.

    Args:
        model: the network (put in training mode here).
        loader: batches with `image` (B, C, D, H, W) and `label` (B,).
        optimiser: its optimiser.
        scaler: gradient scaler (disabled unless mixed precision).
        device: where the model lives.
        amp: run the forward pass under `torch.autocast` (float16).
    """
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        x = batch[IMAGE_KEY].to(device, non_blocking=True)
        y = torch.as_tensor(batch[LABEL_KEY]).long().to(device, non_blocking=True)
        optimiser.zero_grad(set_to_none=True)
        with _autocast(device, amp):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        total += float(loss.detach()) * len(y)
        count += len(y)
    return total / max(count, 1)


@torch.no_grad()
def _logits(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False) -> np.ndarray:
    """Logits (N, 2) of the model over a loader, in loader order."""
    model.eval()
    out = []
    for batch in loader:
        with _autocast(device, amp):
            out.append(model(batch[IMAGE_KEY].to(device)).float().cpu())
    return torch.cat(out).numpy()


def validation_scores(logits: np.ndarray, labels: Sequence[int]) -> tuple[float, float]:
    """Macro F1 of the argmax prediction and the mean cross-entropy.

    Args:
        logits: (N, 2) network outputs.
        labels: N class indices.
    """
    y = np.asarray(labels, dtype=np.int64)
    f1 = f1_score(y, logits.argmax(axis=1), average="macro", labels=list(CLASS_INDICES), zero_division=0)
    loss = nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(y))
    return float(f1), float(loss)


def is_validation_epoch(epoch: int, epochs: int, interval: int) -> bool:
    """Whether a fit of `epochs` epochs validates after `epoch`: every `interval`-th epoch and the last."""
    return epoch == epochs or epoch % interval == 0


def is_better(record: EpochRecord, best: EpochRecord | None) -> bool:
    """Whether `record` beats `best`: higher macro F1, then lower loss; a full tie keeps the earlier.

    Args:
        record: the newer, validated epoch.
        best: the best earlier epoch (None: nothing yet).
    """
    assert record.val_macro_f1 is not None and record.val_loss is not None, "only validated epochs compete"
    if best is None:
        return True
    assert best.val_macro_f1 is not None and best.val_loss is not None
    if abs(record.val_macro_f1 - best.val_macro_f1) > F1_TIE_TOLERANCE:
        return record.val_macro_f1 > best.val_macro_f1
    return record.val_loss < best.val_loss


def _probabilities(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits), dim=1)[:, RICE_INDEX].numpy()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclasses.dataclass
class _Selection:
    """The best epoch so far (reported only) and the latest epoch's weights and validation probabilities."""

    best: EpochRecord | None = None
    state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    probabilities: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))

    def offer(self, record: EpochRecord, model: nn.Module, logits: np.ndarray, last: bool) -> None:
        """Take a validated epoch's record (and, for the last epoch, its weights and probabilities)."""
        if is_better(record, self.best):
            self.best = record
        if last:
            self.state, self.probabilities = _cpu_state(model), _probabilities(logits)


def _loaders(
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    profile: Profile,
    dev: torch.device,
    num_workers: int,
    seed: int,
) -> tuple[DataLoader, DataLoader]:
    """The cached, augmenting, class-balanced training loader and the cached validation loader."""
    aug_device = dev if dev.type == "cuda" and num_workers == 0 else None
    train_ds = cached_dataset(train_items, augment=profile.augment, device=aug_device)
    labels = [int(item[LABEL_KEY]) for item in train_items]
    loader = train_loader(train_ds, labels, profile.batch_size, seed, num_workers)
    return loader, eval_loader(cached_dataset(val_items), profile.batch_size)


def _fit(
    loaders: tuple[DataLoader, DataLoader],
    val_labels: list[int],
    n_channels: int,
    profile: Profile,
    dev: torch.device,
    on_epoch: EpochCallback | None,
) -> tuple[list[EpochRecord], _Selection]:
    """The epoch loop: train, validate (every `validation_interval` epochs and after the last), select."""
    loader, val_loader = loaders
    amp = profile.amp and dev.type == "cuda"
    model = build_network(n_channels, profile.conv1_t_stride, profile.widen_factor).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=profile.learning_rate, fused=True)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)
    history: list[EpochRecord] = []
    selection = _Selection()
    for epoch in range(1, profile.epochs + 1):
        t0 = time.perf_counter()
        train_loss = train_epoch(model, loader, optimiser, scaler, dev, amp)
        if is_validation_epoch(epoch, profile.epochs, profile.validation_interval):
            logits = _logits(model, val_loader, dev, amp)
            f1, val_loss = validation_scores(logits, val_labels)
            record = EpochRecord(epoch, train_loss, f1, val_loss, time.perf_counter() - t0)
            selection.offer(record, model, logits, last=epoch == profile.epochs)
        else:
            record = EpochRecord(epoch, train_loss, None, None, time.perf_counter() - t0)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history, selection


def train_fold(
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    profile: Profile,
    *,
    device: str | torch.device | None = None,
    on_epoch: EpochCallback | None = None,
    num_workers: int = 0,
    seed: int | None = None,
) -> FoldResult:
    """Train one fold model for the profile's epochs and keep the last epoch's weights (module docstring).

    Args:
        train_items: labelled data items (`rice_models.data.make_item`) of the fold's training patients.
        val_items: labelled data items of the fold's validation patients (same combination).
        profile: settings used: epochs, validation_interval, learning_rate, batch_size, conv1_t_stride,
            widen_factor, augment, train_seed, amp.
        device: where to train; None = CUDA when available, else the CPU.
        on_epoch: called with each epoch's record as soon as it is known (progress, live logging).
        num_workers: training-loader processes (0 keeps augmentation in this process, and on a GPU
            runs the spatial augmentation there).
        seed: seed of weight initialisation, sampling and augmentation; None = `profile.train_seed`.

    Raises:
        ValueError: bad settings, no validation items, unlabelled items, or mixed combinations.
    """
    _check_settings(profile, train_items, val_items)
    channels = item_channels([*train_items, *val_items])
    dev = resolve_device(device)
    val_labels = [int(item[LABEL_KEY]) for item in val_items]
    start = time.perf_counter()
    seed = profile.train_seed if seed is None else int(seed)
    with deterministic(seed), plain_tensors():
        loaders = _loaders(train_items, val_items, profile, dev, num_workers, seed)
        history, selection = _fit(loaders, val_labels, len(channels), profile, dev, on_epoch)
    assert selection.best is not None  # at least one epoch ran
    return FoldResult(
        state_dict=selection.state,
        channels=channels,
        conv1_t_stride=profile.conv1_t_stride,
        widen_factor=profile.widen_factor,
        history=history,
        best_epoch=selection.best.epoch,
        device=str(dev),
        amp=profile.amp and dev.type == "cuda",
        seconds=time.perf_counter() - start,
        n_train=len(train_items),
        val_patient_ids=tuple(str(item.get("patient_id", "")) for item in val_items),
        val_labels=tuple(val_labels),
        val_probabilities=tuple(float(p) for p in selection.probabilities),
        seed=seed,
    )


def predict_logits(
    model: nn.Module,
    items: Sequence[Mapping[str, Any]],
    device: str | torch.device | None = None,
    batch_size: int = 4,
) -> np.ndarray:
    """Logits (N, 2) of a model for data items (labels not needed), in item order.

    Args:
        model: a fold model (e.g. `FoldResult.build_model()` or one loaded from MLflow).
        items: data items (`rice_models.data.make_item`) of the model's combination.
        device: where to run; None = CUDA when available, else the CPU.
        batch_size: items per forward pass.

    Raises:
        ValueError: no items, or items of different combinations.
    """
    dev = resolve_device(device)
    with plain_tensors():
        loader = eval_loader(uncached_dataset(items), batch_size)
        return _logits(model.to(dev), loader, dev)


def predict_proba(
    model: nn.Module,
    items: Sequence[Mapping[str, Any]],
    device: str | torch.device | None = None,
    batch_size: int = 4,
) -> np.ndarray:
    """P(RICE) (class index 1) for each data item, in item order.

    Args:
        model: a fold model.
        items: data items of the model's combination (labels not needed).
        device: where to run; None = CUDA when available, else the CPU.
        batch_size: items per forward pass.
    """
    return _probabilities(predict_logits(model, items, device, batch_size))
