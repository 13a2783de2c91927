"""The ablation table: per combination, the study's per-fold best-epoch validation macro F1, the pooled
out-of-fold macro F1 (the honest figure the champion is chosen on) with its bootstrap interval, and the
test ensemble's macro F1 by the decision rule with its bootstrap interval, beside the study's figures.

Rows (`ablation_rows`) are plain dicts with the keys `ABLATION_COLUMNS`, ready for a CSV or the DuckDB
table `ablation`; `ablation_markdown` renders them. All combinations share one bootstrap seed, so their
test intervals come from the same resampled patients (paired).
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rice_models.channels import COMBINATIONS, channels_of
from rice_models.ensemble import DEFAULT_VOTING, check_voting, ensemble_metrics
from rice_models.metrics import DEFAULT_THRESHOLD, mean_sd


@dataclasses.dataclass(frozen=True)
class StudyFigure:
    """Macro F1 reported by the study for one combination (test F1 only for all three channels)."""

    val_f1: float
    test_f1: float | None = None


STUDY_REFERENCE = (
    "RICE-NET (CVPR 2026, arXiv 2603.11827): 80 development patients (5-fold CV), 12 test patients"
)
STUDY_FIGURES: dict[str, StudyFigure] = {
    "postop": StudyFigure(val_f1=0.70),
    "event": StudyFigure(val_f1=0.58),
    "dose": StudyFigure(val_f1=0.78),
    "postop+event": StudyFigure(val_f1=0.70),
    "postop+dose": StudyFigure(val_f1=0.828),
    "event+dose": StudyFigure(val_f1=0.83),
    "postop+event+dose": StudyFigure(val_f1=0.804, test_f1=0.916),
}
"""The study's ablation (macro F1), keyed like `rice_models.channels.COMBINATIONS`."""

ABLATION_COLUMNS: tuple[str, ...] = (
    "combination",
    "n_folds",
    "val_f1_mean",
    "val_f1_sd",
    "oof_f1",
    "oof_f1_lo",
    "oof_f1_hi",
    "oof_auc",
    "n_oof",
    "test_f1",
    "test_f1_lo",
    "test_f1_hi",
    "n_test",
    "voting",
    "threshold",
    "ci_level",
    "n_boot",
    "champion",
)
COHORT_KINDS: tuple[str, ...] = ("synthetic", "real")


def _check_combinations(keys: Sequence[str]) -> None:
    for key in keys:
        channels_of(key)


def _val_part(values: Sequence[float] | None) -> dict[str, Any]:
    if values is None:
        return {"n_folds": None, "val_f1_mean": None, "val_f1_sd": None}
    mean, sd = mean_sd(values)
    return {"n_folds": len(values), "val_f1_mean": mean, "val_f1_sd": sd}


def _oof_part(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    if metrics is None:
        return dict.fromkeys(("oof_f1", "oof_f1_lo", "oof_f1_hi", "oof_auc", "n_oof"))
    return {
        "oof_f1": metrics["macro_f1"],
        "oof_f1_lo": metrics["macro_f1_lo"],
        "oof_f1_hi": metrics["macro_f1_hi"],
        "oof_auc": metrics.get("roc_auc"),
        "n_oof": metrics["n"],
    }


def _test_part(
    fold_probs: npt.ArrayLike | None, y_test: np.ndarray | None, voting: str, threshold: float, **boot: Any
) -> dict[str, Any]:
    empty = dict.fromkeys(("test_f1", "test_f1_lo", "test_f1_hi", "n_test"))
    rule = {"voting": voting, "threshold": threshold}
    if fold_probs is None or y_test is None:
        return empty | rule | dict.fromkeys(("ci_level", "n_boot"))
    m = ensemble_metrics(fold_probs, y_test, voting, threshold=threshold, **boot)
    return {
        "test_f1": m["macro_f1"],
        "test_f1_lo": m["macro_f1_lo"],
        "test_f1_hi": m["macro_f1_hi"],
        "n_test": m["n"],
        **rule,
        "ci_level": m["ci_level"],
        "n_boot": m["n_boot"],
    }


def ablation_rows(
    val_f1_by_combination: Mapping[str, Sequence[float]],
    test_fold_probs: Mapping[str, npt.ArrayLike],
    y_test: npt.ArrayLike | None,
    voting: str = DEFAULT_VOTING,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    oof: Mapping[str, Mapping[str, Any]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    champion: str | None = None,
) -> list[dict[str, Any]]:
    """One row per combination (in `COMBINATIONS` order) that has validation or test figures.

    Args:
        val_f1_by_combination: combination -> the study's figure: each fold model's best-epoch
            validation macro F1.
        test_fold_probs: combination -> (n_folds, n_test) P(RICE) of its fold models on the test set,
            columns in the order of `y_test`; a combination without test predictions has None test figures.
        y_test: true class index per test patient (None: no test set).
        voting: `majority` or `soft` (`rice_models.ensemble`).
        n_boot: bootstrap resamples of the test interval.
        alpha: 1 - confidence level of the interval.
        seed: bootstrap seed, the same for every combination (paired intervals).
        oof: combination -> `rice_models.ensemble.pooled_oof_metrics` of its fold models.
        threshold: the decision rule's threshold.
        champion: the combination chosen as champion (flagged in its row).

    Returns:
        Dicts with the keys `ABLATION_COLUMNS`; sd is NaN for a single fold.

    Raises:
        ValueError: an unknown combination or voting method, or invalid figures.
    """
    check_voting(voting)
    _check_combinations([*val_f1_by_combination, *test_fold_probs])
    y = None if y_test is None else np.asarray(y_test)
    boot = {"n_boot": n_boot, "alpha": alpha, "seed": seed}
    present = [c for c in COMBINATIONS if c in val_f1_by_combination or c in test_fold_probs]
    oof = oof or {}
    return [
        {"combination": c}
        | _val_part(val_f1_by_combination.get(c))
        | _oof_part(oof.get(c))
        | _test_part(test_fold_probs.get(c), y, voting, threshold, **boot)
        | {"champion": c == champion}
        for c in present
    ]


def format_number(value: Any, digits: int = 3) -> str:
    """A figure with `digits` decimals; "–" for None, NaN, infinity or a value that is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{number:.{digits}f}" if math.isfinite(number) else "–"


def format_study(value: float | None) -> str:
    """A study figure with the digits the study gave (0.70, 0.828)."""
    if value is None:
        return "–"
    return f"{value:.2f}" if round(value, 2) == value else f"{value:.3f}"


def format_interval(row: Mapping[str, Any], key: str) -> str:
    """`row[key]` with its bootstrap interval (`key_lo`, `key_hi`): "0.812 [0.700, 0.901]"; "–" if absent."""
    if format_number(row.get(key)) == "–":
        return "–"
    low, high = format_number(row.get(key + "_lo")), format_number(row.get(key + "_hi"))
    return f"{format_number(row[key])} [{low}, {high}]"


def _row_cells(combination: str, row: Mapping[str, Any] | None) -> list[str]:
    study = STUDY_FIGURES[combination]
    if row is None:
        return [
            f"`{combination}`",
            "not run",
            "not run",
            "not run",
            "not run",
            format_study(study.val_f1),
            format_study(study.test_f1),
        ]
    val = (
        "–"
        if row.get("val_f1_mean") is None
        else f"{format_number(row['val_f1_mean'])} ± {format_number(row['val_f1_sd'])}"
    )
    name = f"`{combination}`" + (" (champion)" if row.get("champion") else "")
    oof, test = format_interval(row, "oof_f1"), format_interval(row, "test_f1")
    auc = format_number(row.get("oof_auc"), 2)
    return [name, val, oof, auc, test, format_study(study.val_f1), format_study(study.test_f1)]


def _header_lines(
    rows: Sequence[Mapping[str, Any]], cohort: str, profile: str, experiment_version: str | None
) -> list[str]:
    tested = [r for r in rows if r.get("test_f1") is not None]
    folds = sorted({int(r["n_folds"]) for r in rows if r.get("n_folds") is not None})
    lines = [
        "### Ablation: macro F1 by input combination",
        "",
        f"- cohort: **{cohort}**; profile: **{profile}**; folds: {', '.join(map(str, folds)) or '–'}",
    ]
    if experiment_version:
        lines.append(f"- experiment version: `{experiment_version}` (every fold model behind this table)")
    lines += [
        "- validation: the study's figure, each fold's best-epoch macro F1 (mean ± sd; maximised over the "
        "validated epochs on the fold's own validation patients, so optimistic; the profile's "
        "`validation_interval` says how often it validated)",
        "- out-of-fold: every development patient predicted once by the fold model that did not train on "
        "it, at the fixed epoch count (95% bootstrap interval over patients); the champion is chosen on it",
    ]
    if tested:
        first = tested[0]
        level = round(100 * float(first["ci_level"]))
        threshold = first.get("threshold", DEFAULT_THRESHOLD)
        lines += [
            f"- test: {first['voting']} voting of the fold models (threshold {threshold:g}), "
            f"n = {first['n_test']} test patients",
            f"- test intervals: {level}% percentile bootstrap over test patients"
            f" ({first['n_boot']} resamples)",
        ]
    else:
        lines.append("- test: no test-set predictions")
    return [*lines, f"- study: {STUDY_REFERENCE}", ""]


def ablation_markdown(
    rows: Sequence[Mapping[str, Any]], cohort: str, profile: str, experiment_version: str | None = None
) -> str:
    """The 7-row ablation table in Markdown, beside the study's figures, with its provenance.

    Args:
        rows: rows of `ablation_rows` (or read back from the `ablation` table); missing combinations
            show as "not run".
        cohort: `synthetic` or `real`.
        profile: the processing profile name (e.g. `quick`, `paper`).
        experiment_version: the experiment every row belongs to.

    Raises:
        ValueError: unknown cohort kind, empty profile, or a row of an unknown combination.
    """
    if cohort not in COHORT_KINDS:
        raise ValueError(f"cohort must be one of {list(COHORT_KINDS)}, got {cohort!r}")
    if not profile:
        raise ValueError("profile must be named")
    by_key = {str(r["combination"]): r for r in rows}
    _check_combinations(list(by_key))
    head = [
        "Combination",
        "Val F1, best epoch (mean ± sd)",
        "Out-of-fold F1 [CI]",
        "Out-of-fold AUC",
        "Test F1 [CI]",
        "Study val F1",
        "Study test F1",
    ]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(_row_cells(c, by_key.get(c))) + " |" for c in COMBINATIONS]
    return "\n".join([*_header_lines(rows, cohort, profile, experiment_version), *table]) + "\n"
