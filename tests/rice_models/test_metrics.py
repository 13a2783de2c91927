"""Tests of rice_models.metrics: hand-computed metric tables and the patient bootstrap."""

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from rice_models.metrics import (
    BOOTSTRAP_METRICS,
    bootstrap_ci,
    classification_metrics,
    confusion_counts,
    mean_sd,
    predict_labels,
)

# y_true, P(RICE), y_pred override, expected figures (None = undefined)
CASES = [
    pytest.param(
        [1, 1, 0, 0], [0.9, 0.4, 0.2, 0.6], None,
        {"tp": 1, "fp": 1, "tn": 1, "fn": 1, "macro_f1": 0.5, "balanced_accuracy": 0.5,
         "sensitivity": 0.5, "specificity": 0.5, "roc_auc": 0.75, "accuracy": 0.5, "n": 4},
        id="one-of-each-error",
    ),
    pytest.param(
        [0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.9], None,
        {"tp": 3, "fp": 0, "tn": 2, "fn": 0, "macro_f1": 1.0, "balanced_accuracy": 1.0,
         "sensitivity": 1.0, "specificity": 1.0, "roc_auc": 1.0, "accuracy": 1.0, "n": 5},
        id="perfect",
    ),
    pytest.param(
        [1, 1, 1], [0.9, 0.8, 0.3], None,
        {"tp": 2, "fp": 0, "tn": 0, "fn": 1, "macro_f1": 0.4, "balanced_accuracy": 2 / 3,
         "sensitivity": 2 / 3, "specificity": None, "roc_auc": None, "accuracy": 2 / 3, "n": 3},
        id="fold-without-recurrence",
    ),
    pytest.param(
        [0, 0], [0.1, 0.2], None,
        {"tp": 0, "fp": 0, "tn": 2, "fn": 0, "macro_f1": 0.5, "balanced_accuracy": 1.0,
         "sensitivity": None, "specificity": 1.0, "roc_auc": None, "accuracy": 1.0, "n": 2},
        id="fold-without-rice-all-correct",
    ),
    pytest.param(
        [1, 0], [0.5, 0.5], None,
        {"tp": 0, "fp": 0, "tn": 1, "fn": 1, "macro_f1": 1 / 3, "balanced_accuracy": 0.5,
         "sensitivity": 0.0, "specificity": 1.0, "roc_auc": 0.5, "accuracy": 0.5, "n": 2},
        id="p-equal-threshold-is-recurrence",
    ),
    pytest.param(
        [1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], [1, 0, 1, 1],
        {"tp": 2, "fp": 1, "tn": 1, "fn": 0, "macro_f1": (0.8 + 2 / 3) / 2, "balanced_accuracy": 0.75,
         "sensitivity": 1.0, "specificity": 0.5, "roc_auc": 0.5, "accuracy": 0.75, "n": 4},
        id="explicit-predictions",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("y_true", "prob", "pred", "expected"), CASES)
def test_classification_metrics_hand_cases(
    y_true: list[int], prob: list[float], pred: list[int] | None, expected: dict[str, float | None]
) -> None:
    got = classification_metrics(y_true, prob, y_pred=pred)
    for key, value in expected.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value), key
    used = predict_labels(prob) if pred is None else np.asarray(pred)
    assert got["macro_f1"] == pytest.approx(
        f1_score(y_true, used, average="macro", labels=[0, 1], zero_division=0)
    )


BAD_INPUTS = [
    pytest.param([0, 2], [0.1, 0.2], {}, id="label-2"),
    pytest.param([], [], {}, id="empty"),
    pytest.param([0, 1], [0.1], {}, id="length"),
    pytest.param([0, 1], [0.1, 1.2], {}, id="prob-above-1"),
    pytest.param([0, 1], [0.1, math.nan], {}, id="nan"),
    pytest.param([0, 1], [0.1, 0.9], {"threshold": 1.0}, id="threshold-1"),
    pytest.param([0, 1], [0.1, 0.9], {"y_pred": [0]}, id="pred-length"),
]


@pytest.mark.parametrize(("y_true", "prob", "kwargs"), BAD_INPUTS)
def test_classification_metrics_rejects(
    y_true: list[int], prob: list[float], kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        classification_metrics(y_true, prob, **kwargs)  # type: ignore[arg-type]


def test_confusion_counts_and_mean_sd() -> None:
    assert confusion_counts([1, 0, 1, 0], [1, 1, 0, 0]) == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    mean, sd = mean_sd([0.8, 0.6])
    assert (mean, sd) == pytest.approx((0.7, math.sqrt(0.02)))
    assert math.isnan(mean_sd([0.8])[1])
    with pytest.raises(ValueError):
        mean_sd([])


def _cohort(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n patients, half RICE, probabilities that are right about 80% of the time."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    right = rng.random(n) < 0.8
    prob = np.where(right == (y == 1), 0.5 + 0.5 * rng.random(n), 0.5 * rng.random(n))
    return y, prob


def test_bootstrap_contains_point_and_narrows_with_more_patients() -> None:
    widths = []
    for n in (20, 400):
        y, prob = _cohort(n)
        point, lo, hi = bootstrap_ci(y, prob, "macro_f1", n_boot=1000, seed=0)
        assert point == pytest.approx(classification_metrics(y, prob)["macro_f1"])
        assert lo <= point <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("macro_f1", lambda t, s: f1_score(t, s > 0.5, average="macro", labels=[0, 1], zero_division=0)),
        ("balanced_accuracy", lambda t, s: balanced_accuracy_score(t, s > 0.5)),
        ("roc_auc", roc_auc_score),
    ],
)
def test_vectorised_metrics_equal_sklearn_per_resample(name: str, reference: object) -> None:
    y, prob = _cohort(15, seed=3)
    prob = np.round(prob, 1)  # ties in the ranking exercise the AUC's tie rule
    fast = bootstrap_ci(y, prob, name, n_boot=300, seed=7)
    slow = bootstrap_ci(y, prob, reference, n_boot=300, seed=7)  # type: ignore[arg-type]
    assert fast == pytest.approx(slow)


def test_bootstrap_skips_single_class_resamples() -> None:
    y = np.array([1, 0, 0])

    def needs_both(t: np.ndarray, s: np.ndarray) -> float:
        assert set(t.tolist()) == {0, 1}
        return float(np.mean(t == (s > 0.5)))

    point, lo, hi = bootstrap_ci(y, [0.9, 0.2, 0.7], needs_both, n_boot=300, seed=0)
    assert point == pytest.approx(2 / 3)
    assert 0.0 <= lo <= hi <= 1.0


def test_bootstrap_single_class_data_counts_every_resample() -> None:
    y = np.ones(6, dtype=int)
    point, lo, hi = bootstrap_ci(y, [0.9, 0.8, 0.7, 0.6, 0.2, 0.1], "sensitivity", n_boot=200)
    assert point == pytest.approx(4 / 6) and lo <= point <= hi
    auc = bootstrap_ci(y, np.full(6, 0.9), "roc_auc", n_boot=50)
    assert all(math.isnan(v) for v in auc)


def test_bootstrap_is_seeded() -> None:
    y, prob = _cohort(30)
    assert bootstrap_ci(y, prob, seed=4) == bootstrap_ci(y, prob, seed=4)
    assert bootstrap_ci(y, prob, seed=4) != bootstrap_ci(y, prob, seed=5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_boot": 0},
        {"alpha": 1.0},
        {"alpha": 0.0},
        {"metric_fn": "f2"},
        {"metric_fn": 3},
        {"threshold": 0.0},
    ],
)
def test_bootstrap_rejects(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([0, 1, 1], [0.2, 0.7, 0.4], **kwargs)  # type: ignore[arg-type]


def test_named_metrics_are_listed() -> None:
    assert set(BOOTSTRAP_METRICS) >= {
        "macro_f1",
        "balanced_accuracy",
        "roc_auc",
        "sensitivity",
        "specificity",
    }
