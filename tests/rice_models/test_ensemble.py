"""Tests of rice_models.ensemble: voting, the FoldEnsemble module, champion selection."""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from rice_models.ensemble import (
    DEFAULT_VOTING,
    DecisionRule,
    FoldEnsemble,
    ensemble_metrics,
    ensemble_probability,
    pooled_oof_metrics,
    prediction_rows,
    select_champion,
)
from rice_models.network import build_network

torch.set_num_threads(2)

# 5 folds x 3 patients: A = two confident RICE votes against three weak recurrence votes,
# B = three weak RICE votes against two confident recurrence votes, C = every fold exactly at 0.5.
FIVE_FOLDS = np.array(
    [
        [0.9, 0.6, 0.5],
        [0.9, 0.6, 0.5],
        [0.4, 0.6, 0.5],
        [0.4, 0.1, 0.5],
        [0.4, 0.1, 0.5],
    ]
)


def test_soft_and_majority_disagree_on_hand_case() -> None:
    prob, pred = ensemble_probability(FIVE_FOLDS, "soft")
    assert prob == pytest.approx([0.6, 0.4, 0.5])
    assert pred.tolist() == [1, 0, 0]  # 0.5 is not above the threshold: recurrence
    prob, pred = ensemble_probability(FIVE_FOLDS, "majority")
    assert prob == pytest.approx([0.4, 0.6, 0.0])
    assert pred.tolist() == [0, 1, 0]
    assert DEFAULT_VOTING == "majority"


def test_majority_tie_is_broken_by_the_mean_probability() -> None:
    four = np.array([[0.9, 0.6], [0.9, 0.6], [0.2, 0.1], [0.2, 0.1]])  # 2 votes of 4 for each patient
    prob, pred = ensemble_probability(four, "majority")
    assert prob == pytest.approx([0.5, 0.5])
    assert pred.tolist() == [1, 0]  # means 0.55 and 0.35


@pytest.mark.parametrize(
    ("probs", "method"),
    [
        (np.zeros((0, 3)), "soft"),
        (np.zeros(3), "soft"),
        (np.full((2, 2), 1.5), "soft"),
        (np.full((2, 2), 0.5), "mean"),
    ],
)
def test_ensemble_probability_rejects(probs: np.ndarray, method: str) -> None:
    with pytest.raises(ValueError):
        ensemble_probability(probs, method)


def test_ensemble_metrics_use_the_vote() -> None:
    y = np.array([0, 1, 0])
    got = ensemble_metrics(FIVE_FOLDS, y, "majority", n_boot=200)
    assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (1, 0, 2, 0)
    assert got["macro_f1"] == pytest.approx(1.0)
    assert got["macro_f1_lo"] <= got["macro_f1"] <= got["macro_f1_hi"]
    assert (got["voting"], got["n_folds"], got["ci_level"]) == ("majority", 5, pytest.approx(0.95))
    soft = ensemble_metrics(FIVE_FOLDS, y, "soft", n_boot=200)
    assert (soft["tp"], soft["fp"], soft["tn"], soft["fn"]) == (0, 1, 1, 1)


def test_prediction_rows() -> None:
    rows = prediction_rows("postop+dose", ["A", "B", "C"], FIVE_FOLDS, [0, 1, None])
    assert [r["patient_id"] for r in rows] == ["A", "B", "C"]
    assert rows[1] | {"fold_probs": None} == {
        "patient_id": "B",
        "combination": "postop+dose",
        "voting": "majority",
        "fold_probs": None,
        "prob": pytest.approx(0.6),
        "pred": 1,
        "label": 1,
    }
    assert rows[1]["fold_probs"] == pytest.approx([0.6, 0.6, 0.6, 0.1, 0.1])
    assert rows[2]["label"] is None
    with pytest.raises(ValueError):
        prediction_rows("postop", ["A"], FIVE_FOLDS)


def _tiny_net(seed: int, channels: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(channels, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))


def test_fold_ensemble_applies_its_decision_rule() -> None:
    nets = [_tiny_net(s) for s in range(3)]
    x = torch.randn(4, 2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    soft = FoldEnsemble(nets, combination="postop+dose", rule=DecisionRule("soft"))
    with torch.no_grad():
        p = soft(x)
        expected = torch.stack([torch.softmax(net(x), dim=1)[:, 1] for net in nets]).mean(dim=0)
        folds = soft.fold_probabilities(x)
    assert p.shape == (4,) and p.dtype == torch.float32
    assert torch.all((p >= 0) & (p <= 1))
    assert torch.allclose(p, expected, atol=1e-6)
    assert folds.shape == (3, 4)
    majority = FoldEnsemble(nets, combination="postop+dose")
    assert majority.rule == DecisionRule() == DecisionRule("majority", 0.5)
    prob, pred = majority.predict(x)
    expected_prob, expected_pred = ensemble_probability(folds.double().numpy(), "majority")
    np.testing.assert_array_equal(prob, expected_prob)
    np.testing.assert_array_equal(pred, expected_pred)
    assert set(np.round(prob * 3).tolist()) <= {0.0, 1.0, 2.0, 3.0}, "majority: the share of votes"
    assert torch.equal(majority(x), torch.as_tensor(prob, dtype=torch.float32))


@pytest.mark.parametrize(("voting", "threshold"), [("mean", 0.5), ("soft", 0.0), ("soft", 1.0)])
def test_decision_rule_rejects(voting: str, threshold: float) -> None:
    with pytest.raises(ValueError):
        DecisionRule(voting, threshold)


def test_decision_rule_threshold_moves_the_class() -> None:
    prob, pred = DecisionRule("soft", 0.3).decide(FIVE_FOLDS)
    assert prob == pytest.approx([0.6, 0.4, 0.5]) and pred.tolist() == [1, 1, 1]
    assert DecisionRule("soft", 0.3).as_dict() == {"voting": "soft", "threshold": 0.3}


def test_pooled_oof_metrics_have_an_interval() -> None:
    y = np.array([0, 1] * 10)
    p = np.where(y == 1, 0.8, 0.3)
    p[:4] = 1 - p[:4]
    m = pooled_oof_metrics(y, p, n_boot=200, seed=1)
    assert m["n"] == 20 and m["macro_f1"] == pytest.approx(0.8)
    assert m["macro_f1_lo"] <= m["macro_f1"] <= m["macro_f1_hi"]


def test_fold_ensemble_of_monai_resnets() -> None:
    torch.manual_seed(0)
    ensemble = FoldEnsemble([build_network(3, conv1_t_stride=2) for _ in range(2)], "postop+event+dose")
    assert not ensemble.training
    with torch.no_grad():
        p = ensemble(torch.randn(1, 3, 16, 16, 16))
    assert p.shape == (1,) and 0.0 <= float(p) <= 1.0


def test_fold_ensemble_rejects() -> None:
    with pytest.raises(ValueError):
        FoldEnsemble([])
    with pytest.raises(ValueError):
        FoldEnsemble([_tiny_net(0)], combination="all")
    ensemble = FoldEnsemble([_tiny_net(0)], combination="postop+dose")
    with pytest.raises(ValueError, match="channels"):
        ensemble(torch.zeros(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="D, H, W"):
        ensemble(torch.zeros(2, 8, 8, 8))


CHAMPION_CASES = [
    pytest.param({"dose": 0.75, "event+dose": 0.85, "event": 0.55}, "event+dose", id="max"),
    pytest.param({"postop+event+dose": 0.75, "dose": 0.75}, "dose", id="tie-channels"),
    pytest.param({"event": 0.65, "postop": 0.65}, "postop", id="tie-order"),
]  # fmt: skip


@pytest.mark.parametrize(("oof_f1", "expected"), CHAMPION_CASES)
def test_select_champion(oof_f1: dict[str, float], expected: str) -> None:
    assert select_champion(oof_f1) == expected


def test_select_champion_sees_the_pooled_out_of_fold_figure_only() -> None:
    assert list(inspect.signature(select_champion).parameters) == ["oof_f1_by_combination"]
    assert select_champion({"postop+event+dose": 0.80, "event+dose": 0.83}) == "event+dose"


@pytest.mark.parametrize("oof_f1", [{}, {"mri": 0.5}, {"dose": float("nan")}])
def test_select_champion_rejects(oof_f1: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        select_champion(oof_f1)
