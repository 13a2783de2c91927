"""Patient-level stratified folds, the test set, and the leakage check."""

import math
import random
from collections import Counter

import pytest

from rice_models.splits import Fold, FrozenRoles, Splits, frozen_problems, leakage_problems, make_splits


def cohort(n_rice: int, n_rec: int, n_test: int = 0, n_unlabelled: int = 0) -> list[tuple[str, str, str]]:
    """Rows (id, label, split); the first `n_test` of each label are marked test."""
    rows = [(f"R{i:03d}", "rice", "test" if i < n_test else "") for i in range(n_rice)]
    rows += [(f"C{i:03d}", "recurrence", "test" if i < n_test else "") for i in range(n_rec)]
    rows += [(f"U{i:03d}", "", "") for i in range(n_unlabelled)]
    return rows


def test_folds_are_stratified_and_cover_the_development_set() -> None:
    splits = make_splits(cohort(30, 20, n_test=3), n_folds=5, seed=7)
    dev = set(splits.development)
    assert dev == {pid for pid, label in splits.labels.items()} - set(splits.test)
    per_fold = [Counter(splits.labels[p] for p in fold.val) for fold in splits.folds]
    for label in ("rice", "recurrence"):
        counts = [c[label] for c in per_fold]
        assert max(counts) - min(counts) <= 1, counts
    for fold in splits.folds:
        assert set(fold.train) | set(fold.val) == dev
    assert leakage_problems(splits) == []


def test_marked_test_set_is_used_and_unlabelled_are_excluded() -> None:
    rows = cohort(20, 20, n_test=4, n_unlabelled=3) + [("UT", "", "test")]
    splits = make_splits(rows, n_folds=5)
    assert not splits.test_generated
    assert set(splits.test) == {f"R{i:03d}" for i in range(4)} | {f"C{i:03d}" for i in range(4)}
    assert splits.unlabelled == ("U000", "U001", "U002", "UT")
    everywhere = set(splits.test) | set(splits.development)
    assert not everywhere & set(splits.unlabelled)
    assert leakage_problems(splits) == []


def test_stratified_hold_out_when_no_test_is_marked() -> None:
    splits = make_splits(cohort(40, 30, n_unlabelled=5), n_folds=5, test_fraction=0.13, seed=2026)
    assert splits.test_generated
    assert len(splits.test) == math.ceil(0.13 * 70)
    test_labels = Counter(splits.labels[p] for p in splits.test)
    assert abs(test_labels["rice"] - len(splits.test) * 40 / 70) < 1  # the 40:30 ratio is kept
    assert not set(splits.test) & set(splits.unlabelled)
    assert leakage_problems(splits) == []


def test_splits_are_deterministic_and_independent_of_row_order() -> None:
    rows = cohort(25, 25, n_unlabelled=2)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert make_splits(rows, seed=11) == make_splits(shuffled, seed=11)
    assert make_splits(rows, seed=11).folds != make_splits(rows, seed=12).folds


def test_small_class_is_noted_not_refused() -> None:
    splits = make_splits(cohort(20, 3, n_test=0), n_folds=5, test_fraction=0.0)
    assert splits.test == ()
    assert any("no recurrence patient in the validation set" in note for note in splits.notes)
    for fold in splits.folds:  # every fold can still train on both labels
        assert {splits.labels[p] for p in fold.train} == {"rice", "recurrence"}


@pytest.mark.parametrize(
    ("rows", "kwargs", "match"),
    [
        ([("A", "rice", ""), ("A", "recurrence", "")], {}, "duplicate patient ids"),
        ([("A", "benign", "")], {}, "unknown label"),
        ([("A", "rice", "train")], {}, "unknown split"),
        (cohort(10, 10), {"n_folds": 1}, "n_folds must be at least 2"),
        (cohort(10, 10), {"test_fraction": 1.0}, "test_fraction"),
        (cohort(10, 1), {"test_fraction": 0.0}, "at least 2 patients of each label"),
        (cohort(10, 0), {"test_fraction": 0.0}, "at least 2 patients of each label"),
        (cohort(3, 1), {"test_fraction": 0.5}, "stratified test set"),
        (cohort(3, 3), {"n_folds": 5, "test_fraction": 0.0}, "cannot split"),
    ],
)
def test_impossible_cohorts_fail_clearly(rows: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_splits(rows, **kwargs)


def _splits(folds: list[tuple[list[str], list[str]]], test: tuple[str, ...] = (), unlabelled=()) -> Splits:
    return Splits(
        test=test,
        folds=tuple(Fold(i, tuple(train), tuple(val)) for i, (train, val) in enumerate(folds)),
        unlabelled=tuple(unlabelled),
        labels={},
        test_generated=False,
        seed=0,
        test_fraction=0.0,
    )


@pytest.mark.parametrize(
    ("splits", "expected"),
    [
        (_splits([(["B"], ["A"]), (["A"], ["B"])]), []),
        (_splits([(["B"], ["A"]), (["B"], ["A"])]), ["validation sets of folds 0 and 1"]),
        (_splits([(["A", "B"], ["A"]), (["A"], ["B"])]), ["both training and validation of fold 0"]),
        (
            _splits([(["B"], ["A"]), (["A"], ["B"])], test=("A",)),
            ["both the test set and the development set"],
        ),
        (
            _splits([(["B", "T"], ["A"]), (["A"], ["B"])], test=("T",)),
            ["both the test set and the development"],
        ),
        (_splits([(["B"], ["A"]), (["A"], ["B"])], test=("U",), unlabelled=("U",)), ["unlabelled patient U"]),
    ],
)
def test_leakage_problems_table(splits: Splits, expected: list[str]) -> None:
    problems = leakage_problems(splits)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem


def test_round_trip_and_rows() -> None:
    splits = make_splits(cohort(12, 12, n_unlabelled=1), n_folds=3)
    assert Splits.from_dict(splits.as_dict()) == splits
    rows = splits.rows()
    assert len(rows) == 25
    roles = Counter(row["role"] for row in rows)
    assert roles["unlabelled"] == 1 and roles["test"] == len(splits.test)
    fold_of = {row["patient_id"]: row["fold"] for row in rows if row["role"] == "development"}
    assert all(pid in splits.fold(fold_of[pid]).val for pid in fold_of)
    with pytest.raises(ValueError, match="out of range"):
        splits.fold("3")


def _frozen_after(splits: Splits) -> FrozenRoles:
    """What a split fixes once fold models were trained on it."""
    return FrozenRoles(frozenset(splits.test), frozenset(splits.development), splits.test_generated)


def _grow(rows: list[tuple[str, str, str]], n_rice: int, n_rec: int) -> list[tuple[str, str, str]]:
    new = [(f"NR{i:03d}", "rice", "") for i in range(n_rice)] + [
        (f"NC{i:03d}", "recurrence", "") for i in range(n_rec)
    ]
    return rows + new


def test_a_redraw_moves_patients_a_frozen_split_does_not() -> None:
    """The issue's case: 80 -> 100 labelled patients with the default seed."""
    before = make_splits(cohort(48, 32))
    grown = _grow(cohort(48, 32), 12, 8)
    redrawn = make_splits(grown)
    assert set(before.test) - set(redrawn.test), "a plain redraw moves earlier test patients out"
    assert set(redrawn.test) & set(before.development), "and trained-on patients in"
    after = make_splits(grown, frozen=_frozen_after(before))
    assert set(before.test) <= set(after.test)
    assert not set(after.test) & set(before.development)
    assert after.test_generated and leakage_problems(after) == []
    for label in ("rice", "recurrence"):
        n_label = sum(1 for v in after.labels.values() if v == label)
        n_test = sum(1 for p in after.test if after.labels[p] == label)
        assert abs(n_test - 0.13 * n_label) <= 1, (label, n_test, n_label)


def test_arrivals_are_assigned_by_seed_and_id_not_by_order() -> None:
    first = make_splits(cohort(30, 20), seed=3)
    grown = _grow(cohort(30, 20), 10, 10)
    frozen = _frozen_after(first)
    a = make_splits(grown, seed=3, frozen=frozen)
    shuffled = list(grown)
    random.Random(1).shuffle(shuffled)
    b = make_splits(shuffled, seed=3, frozen=frozen)
    assert a.test == b.test
    assert set(a.test) - set(first.test), "some arrivals joined the test set"
    assert make_splits(grown, seed=3, frozen=frozen).test == a.test


def test_a_marked_test_set_stays_marked_as_patients_arrive() -> None:
    first = make_splits(cohort(20, 20, n_test=3))
    assert not first.test_generated
    rows = _grow(cohort(20, 20, n_test=3), 5, 5) + [("LATE", "rice", "test")]
    rows = [(pid, label, "test" if pid == "R010" else split) for pid, label, split in rows]  # trained on
    rows = [(pid, "" if pid == "C000" else label, split) for pid, label, split in rows]  # label withdrawn
    after = make_splits(rows, frozen=_frozen_after(first))
    assert set(after.test) == (set(first.test) - {"C000"}) | {"LATE"}
    assert "C000" in after.unlabelled
    assert "R010" in after.development
    assert any("R010" in note and "stays in the development set" in note for note in after.notes)
    assert all(pid in after.development for pid, *_ in rows if pid.startswith("N"))


def test_frozen_roles_without_a_known_origin_are_read_from_the_marks() -> None:
    first = make_splits(cohort(20, 20))
    unknown = FrozenRoles(frozenset(first.test), frozenset(first.development), None)
    after = make_splits(_grow(cohort(20, 20), 10, 10), frozen=unknown)
    assert after.test_generated and set(first.test) < set(after.test)


def test_frozen_problems_name_the_moved_patients() -> None:
    first = make_splits(cohort(20, 20))
    frozen = _frozen_after(first)
    assert frozen_problems(make_splits(_grow(cohort(20, 20), 5, 5), frozen=frozen), frozen) == []
    redrawn = make_splits(_grow(cohort(20, 20), 5, 5), seed=99)
    problems = frozen_problems(redrawn, frozen)
    assert problems and all("left it" in p or "now in the test set" in p for p in problems)
