"""The ablation table: per combination, validation macro F1 over folds and the test ensemble's macro F1
with its bootstrap interval, beside the RICE-NET study's figures.

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
from rice_models.metrics import mean_sd


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
    "test_f1",
    "test_f1_lo",
    "test_f1_hi",
    "n_test",
    "voting",
    "ci_level",
    "n_boot",
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


def _test_part(
    fold_probs: npt.ArrayLike | None, y_test: np.ndarray | None, voting: str, **boot: Any
) -> dict[str, Any]:
    empty = dict.fromkeys(("test_f1", "test_f1_lo", "test_f1_hi", "n_test", "ci_level", "n_boot"))
    if fold_probs is None or y_test is None:
        return empty | {"voting": voting}
    m = ensemble_metrics(fold_probs, y_test, voting, **boot)
    return {
        "test_f1": m["macro_f1"],
        "test_f1_lo": m["macro_f1_lo"],
        "test_f1_hi": m["macro_f1_hi"],
        "n_test": m["n"],
        "voting": voting,
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
) -> list[dict[str, Any]]:
    """One row per combination (in `COMBINATIONS` order) that has validation or test figures.

    Args:
        val_f1_by_combination: combination -> validation macro F1 of each fold model.
        test_fold_probs: combination -> (n_folds, n_test) P(RICE) of its fold models on the test set,
            columns in the order of `y_test`; a combination without test predictions has None test figures.
        y_test: true class index per test patient (None: no test set).
        voting: `majority` or `soft` (`rice_models.ensemble`).
        n_boot: bootstrap resamples of the test interval.
        alpha: 1 - confidence level of the interval.
        seed: bootstrap seed, the same for every combination (paired intervals).

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
    return [
        {"combination": c}
        | _val_part(val_f1_by_combination.get(c))
        | _test_part(test_fold_probs.get(c), y, voting, **boot)
        for c in present
    ]


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def _study(value: float | None) -> str:
    """A study figure with the digits the study gave (0.70, 0.828)."""
    if value is None:
        return "–"
    return f"{value:.2f}" if round(value, 2) == value else f"{value:.3f}"


def _row_cells(combination: str, row: Mapping[str, Any] | None) -> list[str]:
    study = STUDY_FIGURES[combination]
    if row is None:
        return [f"`{combination}`", "not run", "not run", _study(study.val_f1), _study(study.test_f1)]
    val = "–" if row.get("val_f1_mean") is None else f"{_num(row['val_f1_mean'])} ± {_num(row['val_f1_sd'])}"
    test = "–"
    if row.get("test_f1") is not None:
        test = f"{_num(row['test_f1'])} [{_num(row['test_f1_lo'])}, {_num(row['test_f1_hi'])}]"
    return [f"`{combination}`", val, test, _study(study.val_f1), _study(study.test_f1)]


def _header_lines(rows: Sequence[Mapping[str, Any]], cohort: str, profile: str) -> list[str]:
    tested = [r for r in rows if r.get("test_f1") is not None]
    folds = sorted({int(r["n_folds"]) for r in rows if r.get("n_folds") is not None})
    lines = [
        "### Ablation: macro F1 by input combination",
        "",
        f"- cohort: **{cohort}**; profile: **{profile}**; folds: {', '.join(map(str, folds)) or '–'}",
    ]
    if tested:
        first = tested[0]
        level = round(100 * float(first["ci_level"]))
        lines += [
            f"- test: {first['voting']} voting of the fold models, n = {first['n_test']} test patients",
            f"- test intervals: {level}% percentile bootstrap over test patients"
            f" ({first['n_boot']} resamples)",
        ]
    else:
        lines.append("- test: no test-set predictions")
    return [*lines, f"- study: {STUDY_REFERENCE}", ""]


def ablation_markdown(rows: Sequence[Mapping[str, Any]], cohort: str, profile: str) -> str:
    """The 7-row ablation table in Markdown, beside the study's figures, with its provenance.

    Args:
        rows: rows of `ablation_rows` (or read back from the `ablation` table); missing combinations
            show as "not run".
        cohort: `synthetic` or `real`.
        profile: the processing profile name (e.g. `quick`, `paper`).

    Raises:
        ValueError: unknown cohort kind, empty profile, or a row of an unknown combination.
    """
    if cohort not in COHORT_KINDS:
        raise ValueError(f"cohort must be one of {list(COHORT_KINDS)}, got {cohort!r}")
    if not profile:
        raise ValueError("profile must be named")
    by_key = {str(r["combination"]): r for r in rows}
    _check_combinations(list(by_key))
    head = ["Combination", "Val F1 (mean ± sd)", "Test F1 [CI]", "Study val F1", "Study test F1"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(_row_cells(c, by_key.get(c))) + " |" for c in COMBINATIONS]
    return "\n".join([*_header_lines(rows, cohort, profile), *table]) + "\n"
