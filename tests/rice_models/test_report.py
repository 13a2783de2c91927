"""Tests of rice_models.report: ablation rows and the Markdown table beside the study's figures."""

import math

import numpy as np
import pytest

from rice_models.channels import COMBINATIONS
from rice_models.ensemble import ensemble_metrics, pooled_oof_metrics
from rice_models.report import ABLATION_COLUMNS, STUDY_FIGURES, ablation_markdown, ablation_rows

Y_TEST = np.array([0, 1, 0, 1, 1, 0, 1, 0])


def _fold_probs(seed: int, skill: float) -> np.ndarray:
    """5 folds x 8 test patients; `skill` pulls the probabilities towards the truth."""
    noise = np.random.default_rng(seed).random((5, Y_TEST.size))
    return (1 - skill) * noise + skill * Y_TEST


def _inputs() -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    val = {c: [0.5 + 0.05 * i, 0.6 + 0.05 * i, 0.55, 0.6, 0.65] for i, c in enumerate(COMBINATIONS)}
    test = {c: _fold_probs(i, 0.1 * i) for i, c in enumerate(COMBINATIONS)}
    return val, test


def test_ablation_rows() -> None:
    val, test = _inputs()
    rows = ablation_rows(val, test, Y_TEST, voting="soft", n_boot=300, seed=3)
    assert [r["combination"] for r in rows] == list(COMBINATIONS)
    assert all(tuple(r) == ABLATION_COLUMNS for r in rows)
    row = rows[-1]
    assert row["val_f1_mean"] == pytest.approx(np.mean(val["postop+event+dose"]))
    assert row["val_f1_sd"] == pytest.approx(np.std(val["postop+event+dose"], ddof=1))
    expected = ensemble_metrics(test["postop+event+dose"], Y_TEST, "soft", n_boot=300, seed=3)
    assert (row["test_f1"], row["test_f1_lo"], row["test_f1_hi"]) == pytest.approx(
        (expected["macro_f1"], expected["macro_f1_lo"], expected["macro_f1_hi"])
    )
    assert (row["n_test"], row["voting"], row["n_folds"], row["n_boot"]) == (8, "soft", 5, 300)
    assert all(r["test_f1_lo"] <= r["test_f1"] <= r["test_f1_hi"] for r in rows)


def test_out_of_fold_figures_and_the_champion_are_in_the_rows_and_the_table() -> None:
    val, test = _inputs()
    y = np.array([0, 1] * 10)
    oof = {
        c: pooled_oof_metrics(y, np.where(y == 1, 0.5 + 0.05 * i, 0.4), n_boot=100) for i, c in enumerate(val)
    }
    rows = ablation_rows(val, test, Y_TEST, n_boot=100, oof=oof, threshold=0.4, champion="event+dose")
    by_key = {r["combination"]: r for r in rows}
    assert by_key["dose"]["oof_f1"] == oof["dose"]["macro_f1"] and by_key["dose"]["n_oof"] == 20
    assert by_key["dose"]["oof_f1_lo"] <= by_key["dose"]["oof_f1"] <= by_key["dose"]["oof_f1_hi"]
    assert [r["combination"] for r in rows if r["champion"]] == ["event+dose"]
    assert {r["threshold"] for r in rows} == {0.4}
    text = ablation_markdown(rows, cohort="synthetic", profile="quick", experiment_version="0123abcd")
    assert "`event+dose` (champion)" in text and "`0123abcd`" in text and "threshold 0.4" in text
    assert "Out-of-fold F1 [CI]" in text and "the champion is chosen on it" in text
    (dose_line,) = [line for line in text.splitlines() if line.startswith("| `dose` |")]
    assert f"| {oof['dose']['roc_auc']:.2f} |" in dose_line  # the out-of-fold AUC column
    assert all(line.count("|") == 8 for line in text.splitlines() if line.startswith("|"))


def test_ablation_rows_without_test_predictions() -> None:
    rows = ablation_rows({"dose": [0.7, 0.8]}, {}, None)
    assert len(rows) == 1 and rows[0]["test_f1"] is None and rows[0]["voting"] == "majority"


@pytest.mark.parametrize(
    "kwargs",
    [{"voting": "mean"}, {"val_f1_by_combination": {"mri": [0.5]}}, {"y_test": [0, 2, 0, 1, 1, 0, 1, 0]}],
)
def test_ablation_rows_reject(kwargs: dict[str, object]) -> None:
    val, test = _inputs()
    args: dict[str, object] = {
        "val_f1_by_combination": val,
        "test_fold_probs": test,
        "y_test": Y_TEST,
        "n_boot": 10,
    }
    with pytest.raises(ValueError):
        ablation_rows(**(args | kwargs))  # type: ignore[arg-type]


def test_study_figures_cover_the_seven_combinations() -> None:
    assert set(STUDY_FIGURES) == set(COMBINATIONS)
    assert STUDY_FIGURES["postop+event+dose"].test_f1 == 0.916
    assert [f.test_f1 for c, f in STUDY_FIGURES.items() if c != "postop+event+dose"] == [None] * 6


def test_ablation_markdown_lists_every_combination_beside_the_study() -> None:
    val, test = _inputs()
    text = ablation_markdown(
        ablation_rows(val, test, Y_TEST, n_boot=200), cohort="synthetic", profile="quick"
    )
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table) == 7
    for combination in COMBINATIONS:
        assert sum(f"`{combination}`" in line for line in table) == 1
    for number in ("0.58", "0.70", "0.78", "0.828", "0.83", "0.804", "0.916"):
        assert f"| {number} |" in text
    for phrase in ("synthetic", "quick", "95%", "bootstrap over test patients", "majority voting", "n = 8"):
        assert phrase in text
    assert "| `postop` | 0.580 ± 0.057 |" in text  # postop: folds 0.5, 0.6, 0.55, 0.6, 0.65 (COMBINATIONS[0])


def test_ablation_markdown_marks_missing_combinations_and_nan_sd() -> None:
    rows = ablation_rows({"dose": [0.8]}, {}, None)
    assert math.isnan(rows[0]["val_f1_sd"])
    text = ablation_markdown(rows, cohort="real", profile="paper")
    assert text.count("not run") == 24  # six combinations x (val, out-of-fold F1, out-of-fold AUC, test)
    assert "| `dose` | 0.800 ± – | – |" in text
    assert "no test-set predictions" in text


@pytest.mark.parametrize(("cohort", "profile"), [("simulated", "quick"), ("real", "")])
def test_ablation_markdown_rejects(cohort: str, profile: str) -> None:
    with pytest.raises(ValueError):
        ablation_markdown([], cohort=cohort, profile=profile)
