"""Classification metrics for RICE (positive class, index 1) vs recurrence (index 0); bootstrap intervals.

Class indices follow `rice_models.labels.LABELS`: 0 = recurrence, 1 = RICE. A probability is P(RICE).

Thresholding: a patient is predicted RICE when P(RICE) > threshold (strictly), the same decision as the
argmax of the network's two logits, where an exact tie goes to recurrence (index 0).

Macro F1 is sklearn's `f1_score(average="macro", labels=[0, 1], zero_division=0)`, as in training: both
classes always count, so on a fold that lacks a class the absent class scores F1 = 0 whenever nothing is
predicted for it (precision and recall undefined) and macro F1 is at most 0.5.

Undefined figures are None, never a silent number:
- `roc_auc` is None when `y_true` holds one class only (a ranking needs a patient of each class);
- `sensitivity` (recall of RICE) is None without RICE patients, `specificity` (recall of recurrence)
  None without recurrence patients;
- `balanced_accuracy` is the mean recall over the classes present in `y_true` (sklearn's definition), so
  with one class it is that class's recall.

Bootstrap (`bootstrap_ci`): the percentile interval over resampled patients (drawn with replacement, as
many as there are patients). Resamples holding a single class are skipped and redrawn, so the interval
rests on exactly `n_boot` resamples that each contain both classes; when the data itself holds one
class, no resample can hold two and every resample counts. The named metrics (`BOOTSTRAP_METRICS`) are
computed for all resamples at once from confusion counts (ROC AUC from ranks); a callable metric is
applied resample by resample.
"""

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from rice_models.labels import CLASS_INDICES

DEFAULT_THRESHOLD = 0.5
CHUNK_ELEMENTS = 2_000_000
"""Resampled labels held in memory at once by `bootstrap_ci` (bounds memory for large cohorts)."""
MAX_DRAW_FACTOR = 100
"""`bootstrap_ci` gives up after drawing this many times `n_boot` resamples (all single-class)."""

Metrics = dict[str, float | int | None]
MetricFn = Callable[[np.ndarray, np.ndarray], float]


def check_labels(y_true: npt.ArrayLike) -> np.ndarray:
    """`y_true` as a 1D int array of class indices 0/1.

    Args:
        y_true: true class index per patient.

    Raises:
        ValueError: empty, not 1D, or a value other than 0 and 1.
    """
    y = np.asarray(y_true)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y_true must be a non-empty 1D array, got shape {y.shape}")
    if not np.isin(y, CLASS_INDICES).all():
        raise ValueError(f"y_true must hold class indices {CLASS_INDICES}, got {sorted(set(y.tolist()))}")
    return y.astype(np.int64)


def check_scores(y_score: npt.ArrayLike, n: int) -> np.ndarray:
    """`y_score` as a 1D float array of `n` values in [0, 1] (probabilities or 0/1 predictions).

    Args:
        y_score: P(RICE) or predicted class per patient.
        n: the number of patients.

    Raises:
        ValueError: wrong shape, or a value outside [0, 1] or not finite.
    """
    s = np.asarray(y_score, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"expected {n} scores in a 1D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0:
        raise ValueError("scores must be finite probabilities in [0, 1]")
    return s


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")


def predict_labels(y_prob: npt.ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Predicted class indices: RICE (1) where P(RICE) > threshold, else recurrence (0).

    Args:
        y_prob: P(RICE) per patient.
        threshold: decision threshold in (0, 1).

    Raises:
        ValueError: threshold outside (0, 1).
    """
    _check_threshold(threshold)
    return (np.asarray(y_prob, dtype=np.float64) > threshold).astype(np.int64)


def confusion_counts(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, int]:
    """True/false positives/negatives with RICE as the positive class.

    Args:
        y_true: true class indices.
        y_pred: predicted class indices.

    Raises:
        ValueError: invalid labels or lengths.
    """
    t = check_labels(y_true)
    p = check_labels(y_pred)
    if p.shape != t.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    return {
        "tp": int(np.sum((t == 1) & (p == 1))),
        "fp": int(np.sum((t == 0) & (p == 1))),
        "tn": int(np.sum((t == 0) & (p == 0))),
        "fn": int(np.sum((t == 1) & (p == 0))),
    }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def classification_metrics(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    threshold: float = DEFAULT_THRESHOLD,
    y_pred: npt.ArrayLike | None = None,
) -> Metrics:
    """Macro F1, balanced accuracy, ROC AUC, sensitivity/specificity for RICE and confusion counts.

    Args:
        y_true: true class index per patient (0 = recurrence, 1 = RICE).
        y_prob: P(RICE) per patient (ranks patients for ROC AUC).
        threshold: predicted RICE where P(RICE) > threshold.
        y_pred: predicted class indices to use instead of thresholding `y_prob` (e.g. a majority vote,
            whose tie rule a threshold cannot express).

    Returns:
        `macro_f1`, `balanced_accuracy`, `accuracy`, `roc_auc`, `sensitivity`, `specificity`, `tp`,
        `fp`, `tn`, `fn`, `n`; undefined figures are None (module docstring).

    Raises:
        ValueError: invalid labels, probabilities, predictions or threshold.
    """
    from sklearn.metrics import f1_score, roc_auc_score  # 0.8 s: loaded by the steps that score

    t = check_labels(y_true)
    prob = check_scores(y_prob, t.size)
    pred = predict_labels(prob, threshold) if y_pred is None else check_labels(y_pred)
    counts = confusion_counts(t, pred)
    sens = _ratio(counts["tp"], counts["tp"] + counts["fn"])
    spec = _ratio(counts["tn"], counts["tn"] + counts["fp"])
    recalls = [r for r in (sens, spec) if r is not None]
    two_classes = np.unique(t).size == 2
    return {
        "macro_f1": float(f1_score(t, pred, average="macro", labels=list(CLASS_INDICES), zero_division=0)),
        "balanced_accuracy": float(np.mean(recalls)),
        "accuracy": float(np.mean(t == pred)),
        "roc_auc": float(roc_auc_score(t, prob)) if two_classes else None,
        "sensitivity": sens,
        "specificity": spec,
        **counts,
        "n": int(t.size),
    }


def mean_sd(values: Sequence[float] | npt.ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) of per-fold figures; sd is NaN for one value.

    Args:
        values: one figure per fold.

    Raises:
        ValueError: no values or a value that is not finite.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"need at least one finite value, got {v.tolist()}")
    sd = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
    return float(np.mean(v)), sd


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, else NaN."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-class F1 from counts; 0 where precision and recall are both undefined (zero_division=0)."""
    return np.nan_to_num(_safe_div(2.0 * tp, 2.0 * tp + fp + fn), nan=0.0)


def _counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    """tp, fp, tn, fn per row of resampled labels and predictions (n_resamples, n)."""
    return (
        np.sum((t == 1) & (p == 1), axis=1).astype(np.float64),
        np.sum((t == 0) & (p == 1), axis=1).astype(np.float64),
        np.sum((t == 0) & (p == 0), axis=1).astype(np.float64),
        np.sum((t == 1) & (p == 0), axis=1).astype(np.float64),
    )


def _macro_f1_rows(t: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    tp, fp, tn, fn = _counts(t, (s > threshold).astype(np.int64))
    return 0.5 * (_f1(tp, fp, fn) + _f1(tn, fn, fp))


def _sensitivity_rows(t: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    tp, _, _, fn = _counts(t, (s > threshold).astype(np.int64))
    return _safe_div(tp, tp + fn)


def _specificity_rows(t: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    _, fp, tn, _ = _counts(t, (s > threshold).astype(np.int64))
    return _safe_div(tn, tn + fp)


def _balanced_accuracy_rows(t: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    recalls = np.stack([_sensitivity_rows(t, s, threshold), _specificity_rows(t, s, threshold)])
    present = np.isfinite(recalls)
    return np.where(present, recalls, 0.0).sum(axis=0) / np.maximum(present.sum(axis=0), 1)


def _accuracy_rows(t: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    return np.mean(t == (s > threshold), axis=1)


def _roc_auc_rows(t: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    """Mann-Whitney AUC per row (ties count one half); NaN for a row with one class."""
    from scipy.stats import rankdata  # 0.3 s: loaded by the steps that score

    ranks = rankdata(s, axis=1)
    n_pos = t.sum(axis=1).astype(np.float64)
    n_neg = t.shape[1] - n_pos
    rank_sum = np.sum(ranks * (t == 1), axis=1)
    return _safe_div(rank_sum - n_pos * (n_pos + 1) / 2.0, n_pos * n_neg)


BOOTSTRAP_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "macro_f1": _macro_f1_rows,
    "balanced_accuracy": _balanced_accuracy_rows,
    "accuracy": _accuracy_rows,
    "sensitivity": _sensitivity_rows,
    "specificity": _specificity_rows,
    "roc_auc": _roc_auc_rows,
}
"""Metrics that `bootstrap_ci` computes for all resamples at once, by name."""


def _resamples(
    y_true: np.ndarray, n_boot: int, rng: np.random.Generator, skip_single_class: bool
) -> Iterator[np.ndarray]:
    """Chunks of resample index rows (k, n), `n_boot` rows in all, single-class rows skipped."""
    n = y_true.size
    chunk = max(1, min(n_boot, CHUNK_ELEMENTS // n))
    have = drawn = 0
    while have < n_boot:
        if drawn >= MAX_DRAW_FACTOR * n_boot:
            raise RuntimeError(f"fewer than {n_boot} of {drawn} bootstrap resamples held both classes")
        idx = rng.integers(0, n, size=(chunk, n))
        drawn += chunk
        if skip_single_class:
            positives = y_true[idx].sum(axis=1)
            idx = idx[(positives > 0) & (positives < n)]
        idx = idx[: n_boot - have]
        have += idx.shape[0]
        yield idx


def _resolve_metric(
    metric_fn: str | MetricFn, threshold: float
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function of resampled (t, s) rows returning one value per row."""
    if isinstance(metric_fn, str):
        if metric_fn not in BOOTSTRAP_METRICS:
            raise ValueError(f"unknown metric {metric_fn!r}; expected one of {sorted(BOOTSTRAP_METRICS)}")
        rows_fn = BOOTSTRAP_METRICS[metric_fn]
        return lambda t, s: rows_fn(t, s, threshold)
    if not callable(metric_fn):
        raise ValueError(f"metric_fn must be a metric name or a callable, got {metric_fn!r}")
    fn = metric_fn
    return lambda t, s: np.array([fn(ti, si) for ti, si in zip(t, s, strict=True)], dtype=np.float64)


def bootstrap_ci(
    y_true: npt.ArrayLike,
    y_pred_or_prob: npt.ArrayLike,
    metric_fn: str | MetricFn = "macro_f1",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap interval of a metric, resampling patients.

    Args:
        y_true: true class index per patient.
        y_pred_or_prob: predicted class (0/1) or P(RICE) per patient.
        metric_fn: a name of `BOOTSTRAP_METRICS` (vectorised; thresholds probabilities at `threshold`)
            or a callable `(y_true, y_score) -> float` applied to each resample.
        n_boot: number of resamples that count (single-class ones are redrawn; module docstring).
        alpha: 1 - confidence level (0.05 gives the 95% interval).
        seed: seed of the resampling; the same seed and patients give the same resamples, so intervals
            of different models on one test set are paired.
        threshold: decision threshold of the named metrics.

    Returns:
        (point, lo, hi); lo and hi are NaN when the metric is undefined on every resample.

    Raises:
        ValueError: invalid inputs, `n_boot` < 1, `alpha` outside (0, 1) or an unknown metric name.
    """
    t = check_labels(y_true)
    s = check_scores(y_pred_or_prob, t.size)
    _check_threshold(threshold)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rows = _resolve_metric(metric_fn, threshold)
    point = float(rows(t[None], s[None])[0])
    both = np.unique(t).size == 2
    rng = np.random.default_rng(seed)
    values = np.concatenate([rows(t[idx], s[idx]) for idx in _resamples(t, n_boot, rng, both)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return point, math.nan, math.nan
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(lo), float(hi)
