"""One fold model trained end to end on tiny synthetic volumes; selection rule; determinism."""

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from rice_models.data import make_item
from rice_models.network import build_network
from rice_models.profiles import get_profile
from rice_models.training import (
    EpochRecord,
    is_better,
    predict_proba,
    resolve_device,
    train_fold,
)
from tests.rice_models.test_data import blob_patient

torch.set_num_threads(min(2, torch.get_num_threads()))

COMBINATION = "postop+event+dose"


def cohort_items(root: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` patients alternating RICE (60 Gy dose blob) and recurrence (no blob), 16^3 voxels."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        label = ("rice", "recurrence")[i % 2]
        items.append(make_item(f"P{i:02d}", blob_patient(root / f"P{i:02d}", rng, label), COMBINATION, label))
    return items


def test_train_fold_learns_a_planted_dose_signal(tmp_path: Path) -> None:
    items = cohort_items(tmp_path, 24)
    # 14 epochs x 4 steps: at 16^3 with 16 patients the net (batch norm on 1-voxel maps in its last
    # stages) needs ~12 epochs before its evaluation-mode predictions settle.
    profile = get_profile(
        "quick", shape=(16, 16, 16), epochs=14, batch_size=4, learning_rate=1e-3, validation_interval=1
    )
    seen: list[EpochRecord] = []
    start = time.perf_counter()
    result = train_fold(items[:16], items[16:], profile, device="cpu", on_epoch=seen.append)
    assert time.perf_counter() - start < 120
    assert result.history == seen and len(seen) == 14
    assert result.best.val_macro_f1 >= 0.75  # chance is 0.5; 8 validation patients, 4 per class
    assert all(not is_better(record, result.best) for record in result.history)
    assert result.device == "cpu" and not result.amp and result.n_input_channels == 3
    proba = predict_proba(result.build_model(), items[16:], device="cpu")
    assert proba == pytest.approx(np.array(result.val_probabilities), abs=1e-5)
    assert result.val_labels == (1, 0) * 4
    # the kept weights are the last epoch's (a fixed epoch count), not the best epoch's
    kept_f1 = f1_score(result.val_labels, proba > 0.5, average="macro", labels=[0, 1], zero_division=0)
    assert kept_f1 == pytest.approx(result.final.val_macro_f1) and result.final is result.history[-1]
    summary = result.summary()
    assert summary["best_epoch"] == result.best_epoch and summary["kept_epoch"] == 14
    assert summary["best_val_macro_f1"] >= summary["final_val_macro_f1"]


def test_training_is_deterministic_on_the_cpu(tmp_path: Path) -> None:
    items = cohort_items(tmp_path, 12, seed=1)
    profile = get_profile("quick", shape=(16, 16, 16), epochs=1, batch_size=4)
    first = train_fold(items[:8], items[8:], profile, device="cpu")
    again = train_fold(items[:8], items[8:], profile, device="cpu")
    assert first.history[0].train_loss == again.history[0].train_loss
    assert all(torch.equal(first.state_dict[k], again.state_dict[k]) for k in first.state_dict)
    other = train_fold(items[:8], items[8:], profile, device="cpu", seed=profile.train_seed + 1)
    assert other.seed == profile.train_seed + 1 and first.seed == profile.train_seed
    assert not all(torch.equal(first.state_dict[k], other.state_dict[k]) for k in first.state_dict)


def test_validation_interval_validates_every_nth_and_the_last_epoch(tmp_path: Path) -> None:
    items = cohort_items(tmp_path, 12, seed=2)
    profile = get_profile("quick", shape=(16, 16, 16), epochs=7, batch_size=4, validation_interval=3)
    result = train_fold(items[:8], items[8:], profile, device="cpu")
    assert [r.epoch for r in result.history] == list(range(1, 8))
    assert [r.epoch for r in result.history if r.validated] == [3, 6, 7]
    skipped = [r for r in result.history if not r.validated]
    assert all(r.val_macro_f1 is None and r.val_loss is None and r.train_loss > 0 for r in skipped)
    assert result.best_epoch in (3, 6, 7) and result.best.validated and result.final.validated
    # the reported best is the maximum over the validated epochs alone
    assert result.best.val_macro_f1 == max(r.val_macro_f1 for r in result.history if r.validated)
    every = train_fold(
        items[:8], items[8:], dataclasses.replace(profile, validation_interval=1), device="cpu"
    )
    assert all(r.validated for r in every.history)
    # validating does not touch the weights or the random streams: same training either way
    assert [r.train_loss for r in every.history] == [r.train_loss for r in result.history]
    assert all(torch.equal(every.state_dict[k], result.state_dict[k]) for k in every.state_dict)


def _record(epoch: int, f1: float, loss: float) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=0.0, val_macro_f1=f1, val_loss=loss, seconds=0.0)


@pytest.mark.parametrize(
    ("new", "best", "expected"),
    [
        (_record(2, 0.8, 0.5), None, True),
        (_record(2, 0.9, 0.9), _record(1, 0.8, 0.1), True),  # higher F1 wins whatever the loss
        (_record(2, 0.7, 0.1), _record(1, 0.8, 0.9), False),
        (_record(2, 0.8, 0.3), _record(1, 0.8, 0.4), True),  # F1 tie: lower loss
        (_record(2, 0.8, 0.4), _record(1, 0.8, 0.3), False),
        (_record(2, 0.8, 0.4), _record(1, 0.8, 0.4), False),  # full tie: the earlier epoch stays
    ],
)
def test_selection_rule(new: EpochRecord, best: EpochRecord | None, expected: bool) -> None:
    assert is_better(new, best) is expected


@pytest.mark.parametrize(
    ("overrides", "val", "match"),
    [
        ({"epochs": 0}, True, "epochs"),
        ({"validation_interval": 0}, True, "validation_interval"),
        ({"batch_size": 0}, True, "batch_size"),
        ({"learning_rate": 0.0}, True, "learning_rate"),
        ({}, False, "no validation items"),
    ],
)
def test_bad_settings_fail(tmp_path: Path, overrides: dict[str, Any], val: bool, match: str) -> None:
    items = [
        {"patient_id": "A", "dose": "a.nii.gz", "label": 1},
        {"patient_id": "B", "dose": "b.nii.gz", "label": 0},
    ]
    with pytest.raises(ValueError, match=match):
        train_fold(items, items if val else [], get_profile("quick", **overrides))


def test_unlabelled_items_cannot_train() -> None:
    items = [{"patient_id": "A", "dose": "a.nii.gz"}]
    with pytest.raises(ValueError, match="unlabelled"):
        train_fold(items, items, get_profile("quick"))


def test_widen_factor_keeps_the_18_layers_and_narrows_every_block() -> None:
    full, narrow = build_network(3), build_network(3, widen_factor=0.25)
    convs = [[m for m in net.modules() if isinstance(m, torch.nn.Conv3d)] for net in (full, narrow)]
    assert len(convs[0]) == len(convs[1]) == 20  # 17 weighted 3x3x3/7x7x7 convs + 3 downsampling 1x1x1
    assert [c.out_channels // 4 for c in convs[0]] == [c.out_channels for c in convs[1]]
    n_params = [sum(p.numel() for p in net.parameters()) for net in (full, narrow)]
    assert 14 < n_params[0] / n_params[1] < 17
    assert get_profile("quick").widen_factor == 0.25 and get_profile("paper").widen_factor == 1.0


def test_network_and_device_options() -> None:
    net = build_network(2, conv1_t_stride=2)
    assert net(torch.zeros(2, 2, 16, 16, 16)).shape == (2, 2)
    for kwargs in (
        {"n_input_channels": 0},
        {"n_input_channels": 1, "conv1_t_stride": 0},
        {"n_input_channels": 1, "spatial_dims": 4},
        {"n_input_channels": 1, "widen_factor": 0.0},
        {"n_input_channels": 1, "widen_factor": 0.01},
    ):
        with pytest.raises(ValueError):
            build_network(**kwargs)
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
