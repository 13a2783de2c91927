"""Turn the trained fold models of one experiment into the study's tables: per-cell validation metrics,
the ablation table (the study's best-epoch validation F1, pooled out-of-fold F1, test-set ensemble F1),
per-patient test predictions, and the champion choice.

Validation figures come from each fold model's own validation predictions (recorded when it was
trained: the kept last-epoch model's out-of-fold predictions, and the study's best-epoch F1). Test
figures come from the fold models of a combination as one `FoldEnsemble` with the decision rule, run on
each test patient's model input exactly as the registered champion runs it, so scoring the champion on
the test set gives the probabilities of the table. Fold models are loaded from the MLflow model registry
(`models:/rice-net-<profile>/<version>`), where their weights are stored once.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rice_models.channels import COMBINATIONS
from rice_models.ensemble import (
    DecisionRule,
    FoldEnsemble,
    pooled_oof_metrics,
    prediction_rows,
    select_champion,
)
from rice_models.metrics import classification_metrics
from rice_models.occlusion import load_model_input
from rice_models.report import ablation_rows
from rice_models.tracking import load_model


@dataclasses.dataclass(frozen=True)
class Cell:
    """One trained fold model and its validation predictions.

    Args:
        combination: channel combination key.
        fold: fold index.
        model_uri: the registered fold model, `models:/rice-net-<profile>/<version>`.
        val_patient_ids: validation patients, in the order of the two fields below.
        val_labels: their class indices.
        val_probabilities: P(RICE) of the kept (last-epoch) model on them: out-of-fold predictions.
        best_val_macro_f1: the study's figure, the best validation macro F1 over epochs (None: unknown).
        experiment_version: the experiment the model belongs to.
    """

    combination: str
    fold: int
    model_uri: str
    val_patient_ids: tuple[str, ...]
    val_labels: tuple[int, ...]
    val_probabilities: tuple[float, ...]
    best_val_macro_f1: float | None = None
    experiment_version: str | None = None


@dataclasses.dataclass(frozen=True)
class TestPatient:
    """A test-set patient: id, class index, and the `registered_volumes` folder."""

    patient_id: str
    label: int
    folder: Path


@dataclasses.dataclass
class Evaluation:
    """All tables of one evaluation (rows are plain dicts, ready for CSV or DuckDB)."""

    cells: list[dict[str, Any]]
    ablation: list[dict[str, Any]]
    predictions: list[dict[str, Any]]
    test_labels: list[int]
    test_probability: dict[str, list[float]]
    test_prediction: dict[str, list[int]]
    rule: DecisionRule
    champion: str
    oof: dict[str, dict[str, Any]]


def cell_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Validation metrics of every cell's kept model (macro F1, balanced accuracy, AUC, ...) and the
    study's best-epoch macro F1."""
    rows = []
    for cell in sorted(cells, key=lambda c: (COMBINATIONS.index(c.combination), c.fold)):
        metrics = classification_metrics(np.asarray(cell.val_labels), np.asarray(cell.val_probabilities))
        best = metrics["macro_f1"] if cell.best_val_macro_f1 is None else cell.best_val_macro_f1
        rows.append(
            {"combination": cell.combination, "fold": cell.fold, **metrics, "best_epoch_macro_f1": best}
        )
    return rows


def by_combination(cells: Sequence[Cell]) -> dict[str, list[Cell]]:
    """Cells grouped by combination, each group in fold order, groups in `COMBINATIONS` order."""
    groups: dict[str, list[Cell]] = {}
    for cell in sorted(cells, key=lambda c: (COMBINATIONS.index(c.combination), c.fold)):
        groups.setdefault(cell.combination, []).append(cell)
    return groups


def load_ensemble(cells: Sequence[Cell], rule: DecisionRule) -> FoldEnsemble:
    """The fold models of one combination (fold order) as a `FoldEnsemble` with the decision rule.

    Raises:
        ValueError: cells of more than one combination.
    """
    combination = _one_combination(cells)
    models = [load_model(c.model_uri) for c in sorted(cells, key=lambda c: c.fold)]
    return FoldEnsemble(models, combination, rule)


def fold_probabilities_of(ensemble: FoldEnsemble, patients: Sequence[TestPatient]) -> np.ndarray:
    """(n_folds, n_patients) P(RICE) of each fold model, one patient at a time as the champion runs it."""
    assert ensemble.combination is not None
    columns = []
    for patient in patients:
        x = load_model_input(patient.folder, ensemble.combination)[None]
        with torch.no_grad():
            columns.append(ensemble.fold_probabilities(x).double().cpu().numpy()[:, 0])
    return np.stack(columns, axis=1)


def pooled_oof(cells: Sequence[Cell], n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Combination -> pooled out-of-fold metrics of its fold models (`pooled_oof_metrics`)."""
    out = {}
    for combination, group in by_combination(cells).items():
        labels = [y for c in group for y in c.val_labels]
        probs = [p for c in group for p in c.val_probabilities]
        out[combination] = pooled_oof_metrics(labels, probs, n_boot=n_boot, seed=seed)
    return out


def validation_f1(cells: Sequence[Cell]) -> dict[str, list[float]]:
    """Combination -> the study's figure of each fold: best-epoch validation macro F1 (reported only)."""
    out: dict[str, list[float]] = {}
    for row in cell_rows(cells):
        out.setdefault(row["combination"], []).append(row["best_epoch_macro_f1"])
    return out


def evaluate(
    cells: Sequence[Cell],
    test_patients: Sequence[TestPatient],
    rule: DecisionRule | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """Per-cell validation metrics, the ablation table, the test predictions and the champion choice.

    Args:
        cells: the trained cells of the compared combinations (each with all its folds).
        test_patients: the independent test set (may be empty: then test figures are None).
        rule: the decision rule of the fold ensembles (default: majority vote at 0.5).
        n_boot: bootstrap resamples for the out-of-fold and test intervals.
        seed: bootstrap seed.

    Raises:
        ValueError: no cells.
    """
    if not cells:
        raise ValueError("no fold models to evaluate")
    rule = rule or DecisionRule()
    groups = by_combination(cells)
    labels = [p.label for p in test_patients]
    fold_probs = (
        {c: fold_probabilities_of(load_ensemble(g, rule), test_patients) for c, g in groups.items()}
        if labels
        else {}
    )
    oof = pooled_oof(cells, n_boot=n_boot, seed=seed)
    champion = select_champion({c: float(m["macro_f1"]) for c, m in oof.items()})
    ablation = ablation_rows(
        validation_f1(cells),
        fold_probs,
        labels or None,
        voting=rule.voting,
        n_boot=n_boot,
        seed=seed,
        oof=oof,
        threshold=rule.threshold,
        champion=champion,
    )
    ids = [p.patient_id for p in test_patients]
    predictions = [
        row
        for c, p in fold_probs.items()
        for row in prediction_rows(c, ids, p, labels, rule.voting, rule.threshold)
    ]
    voted = {c: rule.decide(p) for c, p in fold_probs.items()}
    return Evaluation(
        cells=cell_rows(cells),
        ablation=ablation,
        predictions=predictions,
        test_labels=labels,
        test_probability={c: [float(v) for v in prob] for c, (prob, _) in voted.items()},
        test_prediction={c: [int(v) for v in pred] for c, (_, pred) in voted.items()},
        rule=rule,
        champion=champion,
        oof=oof,
    )


def _one_combination(cells: Sequence[Cell]) -> str:
    names = {c.combination for c in cells}
    if len(names) != 1:
        raise ValueError(f"expected the cells of one combination, got {sorted(names)}")
    return names.pop()


def cell_from_summary(combination: str, fold: int, model_uri: str, summary: Mapping[str, Any]) -> Cell:
    """A `Cell` from a registered model URI and the `FoldResult.summary()` recorded with it."""
    best = summary.get("best_val_macro_f1")
    return Cell(
        combination=combination,
        fold=fold,
        model_uri=model_uri,
        val_patient_ids=tuple(summary["val_patient_ids"]),
        val_labels=tuple(int(v) for v in summary["val_labels"]),
        val_probabilities=tuple(float(v) for v in summary["val_probabilities"]),
        best_val_macro_f1=None if best is None else float(best),
        experiment_version=summary.get("experiment_version"),
    )
