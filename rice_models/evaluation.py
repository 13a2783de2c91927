"""Turn the trained fold models into the study's tables: per-cell validation metrics, the ablation
table with test-set ensemble figures, and per-patient test predictions.

Validation figures come from each fold model's own validation predictions (recorded when it was
trained); test figures from running every fold model of a combination on the test patients. Fold
models are loaded from the MLflow model registry (`models:/rice-net/<version>`), where their weights are
stored once.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rice_models.channels import COMBINATIONS
from rice_models.data import make_item
from rice_models.ensemble import DEFAULT_VOTING, ensemble_probability, prediction_rows
from rice_models.metrics import classification_metrics
from rice_models.report import ablation_rows
from rice_models.tracking import load_model
from rice_models.training import predict_proba


@dataclasses.dataclass(frozen=True)
class Cell:
    """One trained fold model and its validation predictions.

    Args:
        combination: channel combination key.
        fold: fold index.
        model_uri: the registered fold model, `models:/rice-net/<version>`.
        val_patient_ids: validation patients, in the order of the two fields below.
        val_labels: their class indices.
        val_probabilities: P(RICE) of the selected model on them.
    """

    combination: str
    fold: int
    model_uri: str
    val_patient_ids: tuple[str, ...]
    val_labels: tuple[int, ...]
    val_probabilities: tuple[float, ...]


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
    voting: str


def cell_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """Validation metrics of every cell (macro F1, balanced accuracy, AUC, sensitivity, ...)."""
    rows = []
    for cell in sorted(cells, key=lambda c: (COMBINATIONS.index(c.combination), c.fold)):
        metrics = classification_metrics(np.asarray(cell.val_labels), np.asarray(cell.val_probabilities))
        rows.append({"combination": cell.combination, "fold": cell.fold, **metrics})
    return rows


def test_fold_probabilities(cells: Sequence[Cell], patients: Sequence[TestPatient]) -> np.ndarray:
    """(n_folds, n_patients) P(RICE) of each cell's model (one combination) on the test patients."""
    combination = _one_combination(cells)
    items = [make_item(p.patient_id, p.folder, combination, None) for p in patients]
    probs = []
    for cell in sorted(cells, key=lambda c: c.fold):
        probs.append(predict_proba(load_model(cell.model_uri), items))
    return np.stack(probs)


def evaluate(
    cells: Sequence[Cell],
    test_patients: Sequence[TestPatient],
    voting: str = DEFAULT_VOTING,
    n_boot: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """Per-cell validation metrics, the ablation table and the test predictions of every combination.

    Args:
        cells: the trained cells (any subset of the 7 x 5).
        test_patients: the independent test set (may be empty: then test figures are None).
        voting: fold-ensemble voting (`majority` or `soft`).
        n_boot: bootstrap resamples for the test intervals.
        seed: bootstrap seed.
    """
    by_combination: dict[str, list[Cell]] = {}
    for cell in cells:
        by_combination.setdefault(cell.combination, []).append(cell)
    val_f1 = validation_f1(cells)
    labels = [p.label for p in test_patients]
    fold_probs = (
        {c: test_fold_probabilities(g, test_patients) for c, g in by_combination.items()} if labels else {}
    )
    ablation = ablation_rows(val_f1, fold_probs, labels or None, voting=voting, n_boot=n_boot, seed=seed)
    ids = [p.patient_id for p in test_patients]
    predictions = [row for c, p in fold_probs.items() for row in prediction_rows(c, ids, p, labels, voting)]
    voted = {c: ensemble_probability(p, voting) for c, p in fold_probs.items()}
    return Evaluation(
        cells=cell_rows(cells),
        ablation=ablation,
        predictions=predictions,
        test_labels=labels,
        test_probability={c: [float(v) for v in prob] for c, (prob, _) in voted.items()},
        test_prediction={c: [int(v) for v in pred] for c, (_, pred) in voted.items()},
        voting=voting,
    )


def validation_f1(cells: Sequence[Cell]) -> dict[str, list[float]]:
    """Combination -> validation macro F1 of each fold (what the champion is chosen on)."""
    out: dict[str, list[float]] = {}
    for row in cell_rows(cells):
        out.setdefault(row["combination"], []).append(row["macro_f1"])
    return out


def _one_combination(cells: Sequence[Cell]) -> str:
    names = {c.combination for c in cells}
    if len(names) != 1:
        raise ValueError(f"expected the cells of one combination, got {sorted(names)}")
    return names.pop()


def cell_from_summary(combination: str, fold: int, model_uri: str, summary: Mapping[str, Any]) -> Cell:
    """A `Cell` from a registered model URI and the `FoldResult.summary()` recorded with it."""
    return Cell(
        combination=combination,
        fold=fold,
        model_uri=model_uri,
        val_patient_ids=tuple(summary["val_patient_ids"]),
        val_labels=tuple(int(v) for v in summary["val_labels"]),
        val_probabilities=tuple(float(v) for v in summary["val_probabilities"]),
    )
