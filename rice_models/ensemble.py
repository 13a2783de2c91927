"""The fold ensemble: the one decision rule over the fold models of a combination, and the champion choice.

The decision rule (`DecisionRule`, applied by `ensemble_probability`, the one function that turns fold
probabilities into P(RICE) and a class) is used by every consumer: the test metrics of
`evaluation_tables`, the registered champion (`FoldEnsemble.forward` and `predict`, so
`ChampionEnsemble.predict` returns the probabilities the table reports), `patient_predictions` and the
occlusion maps. Its two settings are the voting and the threshold.

Voting:
- `majority` (the default): each fold model votes RICE when its P(RICE) > 0.5 (its argmax); the
  ensemble predicts the majority; its probability is the share of RICE votes. The study reports
  "ensemble voting of the fold models" and calls it "multi-model ensemble voting"; voting, said without
  qualification, is the hard majority vote, so it is the default reproducing the study. With the study's
  5 folds a binary vote cannot tie; with an even number of folds a tie is broken by the mean probability
  (the soft vote), and a tie there too goes to recurrence, like the argmax of equal logits.
- `soft`: the mean of the fold probabilities, predicted RICE when > 0.5. Smoother, and the better ranking
  for ROC curves (a majority vote has only n_folds + 1 distinct values).

`FoldEnsemble` is the champion model as one `nn.Module`: softmax per fold, then its decision rule. Its
P(RICE) is what MLflow serves and what occlusion sensitivity follows region by region; with `majority`
voting that is the share of RICE votes (steps of 1/n_folds), so an occlusion map shows where occluding
flips fold votes; `soft` voting gives graded maps.

`select_champion` sees pooled out-of-fold macro F1 (each development patient predicted once, by the fold
model that did not train on it, at the profile's fixed epoch count) and nothing else: neither a figure
maximised over epochs on the same patients nor the test set selects.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from rice_models.channels import COMBINATIONS, channels_of
from rice_models.labels import RICE_INDEX
from rice_models.metrics import DEFAULT_THRESHOLD, bootstrap_ci, check_labels, classification_metrics

VOTING_METHODS: tuple[str, ...] = ("majority", "soft")
DEFAULT_VOTING = "majority"
"""The study's "ensemble voting of the fold models" read as a hard majority vote (module docstring)."""
F1_TIE_TOLERANCE = 1e-9


def check_voting(method: str) -> str:
    """`method` if it is one of `VOTING_METHODS`.

    Args:
        method: a voting method name.

    Raises:
        ValueError: unknown method.
    """
    if method not in VOTING_METHODS:
        raise ValueError(f"unknown voting method {method!r}; expected one of {list(VOTING_METHODS)}")
    return method


def _check_fold_probs(fold_probs: npt.ArrayLike) -> np.ndarray:
    p = np.asarray(fold_probs, dtype=np.float64)
    if p.ndim != 2 or 0 in p.shape:
        raise ValueError(f"fold_probs must be a non-empty (n_folds, n_patients) array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("fold_probs must be finite probabilities in [0, 1]")
    return p


@dataclasses.dataclass(frozen=True)
class DecisionRule:
    """How the fold models' P(RICE) become the ensemble's P(RICE) and class (module docstring).

    Args:
        voting: `majority` (the study's voting, default) or `soft`.
        threshold: a fold model (majority) or the mean (soft) votes RICE above it, in (0, 1).

    Raises:
        ValueError: unknown voting or a threshold outside (0, 1).
    """

    voting: str = DEFAULT_VOTING
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self) -> None:
        check_voting(self.voting)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    def decide(self, fold_probs: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(P(RICE), class) per patient: `ensemble_probability(fold_probs, voting, threshold)`."""
        return ensemble_probability(fold_probs, self.voting, self.threshold)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (MLflow tags, catalog metadata); inverse `DecisionRule(**d)`."""
        return dataclasses.asdict(self)


def ensemble_probability(
    fold_probs: npt.ArrayLike, method: str = DEFAULT_VOTING, threshold: float = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's P(RICE) and predicted class per patient from the fold models' P(RICE).

    This is the one decision rule of the pipeline (module docstring); `DecisionRule.decide` calls it.

    Args:
        fold_probs: (n_folds, n_patients) P(RICE) of each fold model.
        method: `majority` (probability = share of RICE votes) or `soft` (mean probability).
        threshold: a fold model (majority) or the mean (soft) votes RICE above it.

    Returns:
        (prob, pred): float (n_patients,) and int (n_patients,) arrays.

    Raises:
        ValueError: bad shape or values, unknown method, threshold outside (0, 1).
    """
    p = _check_fold_probs(fold_probs)
    check_voting(method)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    mean = p.mean(axis=0)
    soft_pred = (mean > threshold).astype(np.int64)
    if method == "soft":
        return mean, soft_pred
    votes = (p > threshold).sum(axis=0)
    n_folds = p.shape[0]
    pred = np.where(2 * votes == n_folds, soft_pred, (2 * votes > n_folds).astype(np.int64))
    return votes / n_folds, pred.astype(np.int64)


def pooled_oof_metrics(
    y_true: npt.ArrayLike, probs: npt.ArrayLike, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """Pooled out-of-fold metrics: each development patient predicted once, by the fold model that did
    not train on it, thresholded like a fold model's own vote (P(RICE) > 0.5), with a bootstrap
    interval of macro F1 over patients.

    Args:
        y_true: class index of every development patient.
        probs: the out-of-fold P(RICE) of each, in the same order.
        n_boot: bootstrap resamples.
        alpha: 1 - confidence level.
        seed: bootstrap seed.

    Returns:
        `classification_metrics` plus `macro_f1_lo`, `macro_f1_hi`.

    Raises:
        ValueError: invalid labels or probabilities.
    """
    t = check_labels(y_true)
    p = np.asarray(probs, dtype=np.float64)
    out: dict[str, Any] = classification_metrics(t, p)
    _, lo, hi = bootstrap_ci(t, p, "macro_f1", n_boot=n_boot, alpha=alpha, seed=seed)
    return out | {"macro_f1_lo": lo, "macro_f1_hi": hi}


def ensemble_metrics(
    fold_probs: npt.ArrayLike,
    y_true: npt.ArrayLike,
    method: str = DEFAULT_VOTING,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Metrics of the voted ensemble on labelled patients, with a bootstrap interval of macro F1.

    Threshold metrics use the vote's predictions (its tie rule included); ROC AUC ranks the ensemble
    probability, which for `majority` is the share of votes (n_folds + 1 levels, many ties).

    Args:
        fold_probs: (n_folds, n_patients) P(RICE) of each fold model.
        y_true: true class index per patient.
        method: voting method (`VOTING_METHODS`).
        n_boot: bootstrap resamples (`rice_models.metrics.bootstrap_ci`).
        alpha: 1 - confidence level.
        seed: bootstrap seed.
        threshold: the decision rule's threshold.

    Returns:
        `classification_metrics` of the vote plus `macro_f1_lo`, `macro_f1_hi`, `voting`, `n_folds`,
        `ci_level`, `n_boot`.

    Raises:
        ValueError: invalid inputs.
    """
    prob, pred = ensemble_probability(fold_probs, method, threshold)
    t = check_labels(y_true)
    out: dict[str, Any] = classification_metrics(t, prob, y_pred=pred)
    _, lo, hi = bootstrap_ci(t, pred, "macro_f1", n_boot=n_boot, alpha=alpha, seed=seed)
    n_folds = np.asarray(fold_probs).shape[0]
    ci = {"macro_f1_lo": lo, "macro_f1_hi": hi, "ci_level": 1.0 - alpha, "n_boot": n_boot}
    return out | ci | {"voting": method, "threshold": threshold, "n_folds": n_folds}


def prediction_rows(
    combination: str,
    patient_ids: Sequence[str],
    fold_probs: npt.ArrayLike,
    labels: Sequence[int | None] | None = None,
    method: str = DEFAULT_VOTING,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[dict[str, Any]]:
    """One row per patient: fold probabilities, ensemble probability, predicted and true class.

    Args:
        combination: the combination key.
        patient_ids: patient ids, in the column order of `fold_probs`.
        fold_probs: (n_folds, n_patients) P(RICE) of each fold model.
        labels: true class index per patient (None where unlabelled); None: all unlabelled.
        method: voting method.
        threshold: the decision rule's threshold.

    Raises:
        ValueError: lengths differ, unknown combination or method.
    """
    channels_of(combination)
    p = _check_fold_probs(fold_probs)
    prob, pred = ensemble_probability(p, method, threshold)
    truth = list(labels) if labels is not None else [None] * p.shape[1]
    if not len(patient_ids) == len(truth) == p.shape[1]:
        raise ValueError(f"{len(patient_ids)} ids, {len(truth)} labels, {p.shape[1]} probability columns")
    return [
        {
            "patient_id": pid,
            "combination": combination,
            "voting": method,
            "fold_probs": [float(v) for v in p[:, i]],
            "prob": float(prob[i]),
            "pred": int(pred[i]),
            "label": None if label is None else int(label),
        }
        for i, (pid, label) in enumerate(zip(patient_ids, truth, strict=True))
    ]


class FoldEnsemble(nn.Module):
    """The fold networks of one combination as one model returning the ensemble P(RICE) of its rule.

    Put in eval mode on construction (batch norm uses its running statistics); it is an inference model.

    Args:
        models: the fold networks, each mapping (B, C, D, H, W) to two logits (recurrence, RICE).
        combination: the combination key; when given, the input's channel count is checked against it.
        rule: the decision rule (default: the study's majority vote at 0.5).

    Raises:
        ValueError: no models, or an unknown combination.
    """

    def __init__(
        self, models: Sequence[nn.Module], combination: str | None = None, rule: DecisionRule | None = None
    ) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("a fold ensemble needs at least one model")
        self.models = nn.ModuleList(models)
        self.combination = combination
        self.rule = rule or DecisionRule()
        self.n_channels = len(channels_of(combination)) if combination is not None else None
        self.eval()

    def fold_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """P(RICE) of each fold model, shape (n_folds, B).

        Args:
            x: stacked input (B, C, D, H, W).

        Raises:
            ValueError: not a 5D input, a channel count other than the combination's, or a fold model
                that does not return (B, 2) logits.
        """
        if x.ndim != 5:
            raise ValueError(f"expected a (B, C, D, H, W) input, got shape {tuple(x.shape)}")
        if self.n_channels is not None and x.shape[1] != self.n_channels:
            raise ValueError(f"{self.combination} takes {self.n_channels} channels, got {x.shape[1]}")
        probs = []
        for model in self.models:
            logits = model(x)
            if logits.ndim != 2 or logits.shape != (x.shape[0], 2):
                raise ValueError(f"a fold model returned shape {tuple(logits.shape)}, expected (B, 2) logits")
            probs.append(torch.softmax(logits.float(), dim=1)[:, RICE_INDEX])
        return torch.stack(probs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble P(RICE) by the decision rule, shape (B,), float32 on the input's device.

        Args:
            x: stacked input (B, C, D, H, W).
        """
        prob, _ = self.predict(x)
        return torch.as_tensor(prob, dtype=torch.float32, device=x.device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(P(RICE), class) per input by the decision rule: float64 (B,) and int64 (B,) arrays.

        Args:
            x: stacked input (B, C, D, H, W).
        """
        return self.rule.decide(self.fold_probabilities(x).double().cpu().numpy())


def _champion_key(combination: str, value: float) -> tuple[float, int, int]:
    """Sort key: higher F1 (rounded to the tie tolerance), fewer channels, the fixed order."""
    if not math.isfinite(value):
        raise ValueError(f"{combination}: the out-of-fold macro F1 must be finite, got {value}")
    rounded = round(value / F1_TIE_TOLERANCE) * F1_TIE_TOLERANCE
    return (-rounded, len(channels_of(combination)), COMBINATIONS.index(combination))


def select_champion(oof_f1_by_combination: Mapping[str, float]) -> str:
    """The combination with the best pooled out-of-fold macro F1 of its fixed-epoch fold models.

    The figure was not maximised over epochs on the patients it is computed on (the fold models keep
    their last epoch, `rice_models.training`), so choosing on it is honest; the per-fold best-epoch F1
    the study reports is not used. Ties (within 1e-9) go to fewer channels (the simpler input), then to
    the order of `rice_models.channels.COMBINATIONS`. The test set never selects.

    Args:
        oof_f1_by_combination: combination key -> pooled out-of-fold macro F1.

    Raises:
        ValueError: empty mapping, an unknown combination, or a figure that is not finite.
    """
    if not oof_f1_by_combination:
        raise ValueError("no combinations to choose from")
    return min(oof_f1_by_combination, key=lambda c: _champion_key(c, oof_f1_by_combination[c]))
