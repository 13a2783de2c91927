"""Patient-level cross-validation folds and the independent test set, frozen as the cohort grows.

First draw: the test set is the patients that cohort.csv marks `split=test`; when no row is marked, a
seeded, label-stratified hold-out of `test_fraction` of the labelled patients is drawn instead, and
`Splits.test_generated` records it. Unlabelled patients are in neither set (they are only predicted).

Later draws (`frozen`, what earlier splits fixed; the pipeline keeps it in the catalog per profile):
- a patient once in the test set stays there (while it is in the cohort and labelled);
- a patient once in a fold's training or validation set never enters the test set, even if cohort.csv
  marks it `test` later (noted; only an explicit reset redraws);
- a newly marked `test` patient joins the test set;
- other new labelled patients: when the test set was drawn, each label's test share is topped up to
  `test_fraction` (rounded) of that label's patients, taking new patients in the order of a hash of
  (seed, patient id), so the choice is deterministic and independent of arrival order; when the test
  set was marked in cohort.csv, they join the development set.

The development set is split into `n_folds` label-stratified folds with sklearn's
`StratifiedKFold(shuffle=True, random_state=seed)`; fold membership may change as patients arrive (a new
experiment retrains every fold). Patients are sorted by id before any draw, so the result depends only on
the cohort, the frozen roles and the seed, not on row order.
"""

import dataclasses
import hashlib
import logging
import math
import warnings
from collections import Counter
from collections.abc import Sequence, Set
from typing import Any

import numpy as np

from rice_models.labels import LABELS

logger = logging.getLogger(__name__)

TEST_SPLIT = "test"
PatientRow = tuple[str, str | None, str | None]
"""(patient_id, label or None/"" when unlabelled, split: "test" or None/"")."""


@dataclasses.dataclass(frozen=True)
class FrozenRoles:
    """What earlier splits fixed (see the module docstring).

    Args:
        test: every patient once in the test set.
        development: every patient once in a fold's training or validation set.
        test_generated: whether the earlier test set was drawn (True) or marked in cohort.csv (False);
            None when unknown (then it was drawn unless an earlier test patient is marked now).
    """

    test: frozenset[str] = frozenset()
    development: frozenset[str] = frozenset()
    test_generated: bool | None = None

    @property
    def empty(self) -> bool:
        return not self.test and not self.development


@dataclasses.dataclass(frozen=True)
class Fold:
    """One cross-validation fold: its training and validation patients (sorted ids)."""

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Splits:
    """The test set, the development folds and the unlabelled patients of one cohort.

    Args:
        test: test-set patient ids (sorted).
        folds: the development folds, `folds[i].index == i`.
        unlabelled: patients without a label: neither trained on nor tested, only predicted.
        labels: label (`rice`/`recurrence`) of every labelled patient.
        test_generated: True when the test set was drawn here because cohort.csv marked none.
        seed: seed of the hold-out and of the fold assignment.
        test_fraction: share held out when the test set was generated.
        notes: warnings worth recording (e.g. a validation fold without a patient of one class).
    """

    test: tuple[str, ...]
    folds: tuple[Fold, ...]
    unlabelled: tuple[str, ...]
    labels: dict[str, str]
    test_generated: bool
    seed: int
    test_fraction: float
    notes: tuple[str, ...] = ()

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def development(self) -> tuple[str, ...]:
        """All development patients (the union of the folds' validation sets), sorted."""
        return tuple(sorted({pid for fold in self.folds for pid in fold.val}))

    def fold(self, index: int | str) -> Fold:
        """The fold with this index (an int or a fold partition key such as `"3"`).

        Raises:
            ValueError: no such fold.
        """
        i = int(index)
        if not 0 <= i < len(self.folds):
            raise ValueError(f"fold {index!r} out of range: {len(self.folds)} folds")
        return self.folds[i]

    def rows(self) -> list[dict[str, Any]]:
        """One row per patient: `patient_id`, `label`, `role` (`test`/`development`/`unlabelled`),
        `fold` (the fold whose validation set holds the patient; None outside development)."""
        val_fold = {pid: fold.index for fold in self.folds for pid in fold.val}
        out = [_row(pid, self.labels.get(pid), "test", None) for pid in self.test]
        out += [_row(pid, self.labels[pid], "development", val_fold[pid]) for pid in self.development]
        out += [_row(pid, None, "unlabelled", None) for pid in self.unlabelled]
        return sorted(out, key=lambda row: row["patient_id"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: `Splits.from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Splits":
        """Rebuild a `Splits` from `as_dict()` output (e.g. read back from JSON)."""
        folds = tuple(
            Fold(index=int(f["index"]), train=tuple(f["train"]), val=tuple(f["val"])) for f in data["folds"]
        )
        fields = {k: v for k, v in data.items() if k != "folds"}
        for key in ("test", "unlabelled", "notes"):
            fields[key] = tuple(fields.get(key, ()))
        return cls(folds=folds, **fields)


def _row(pid: str, label: str | None, role: str, fold: int | None) -> dict[str, Any]:
    return {"patient_id": pid, "label": label, "role": role, "fold": fold}


def _parse(patients: Sequence[PatientRow]) -> tuple[dict[str, str], list[str], list[str]]:
    """Check the rows; return the labels of labelled patients, the marked test ids, the unlabelled ids."""
    ids = [pid for pid, _, _ in patients]
    duplicates = sorted(pid for pid, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate patient ids: {duplicates}")
    labels: dict[str, str] = {}
    marked: list[str] = []
    unlabelled: list[str] = []
    for pid, label, split in patients:
        if label and label not in LABELS:
            raise ValueError(
                f"patient {pid}: unknown label {label!r}; expected one of {list(LABELS)} or empty"
            )
        if split and split != TEST_SPLIT:
            raise ValueError(f"patient {pid}: unknown split {split!r}; expected {TEST_SPLIT!r} or empty")
        if not label:
            unlabelled.append(pid)
            continue
        labels[pid] = label
        if split == TEST_SPLIT:
            marked.append(pid)
    return labels, sorted(marked), sorted(unlabelled)


def _hold_out(labels: dict[str, str], test_fraction: float, seed: int) -> list[str]:
    """A seeded label-stratified hold-out of `test_fraction` of the labelled patients."""
    if test_fraction == 0.0:
        return []
    from sklearn.model_selection import train_test_split  # 0.8 s: only the step that splits loads it

    ids = sorted(labels)
    try:
        _, test = train_test_split(
            ids, test_size=test_fraction, stratify=[labels[p] for p in ids], random_state=seed
        )
    except ValueError as err:
        raise ValueError(
            f"cannot hold out a stratified test set of {test_fraction:.0%} from {len(ids)} labelled patients "
            f"({dict(Counter(labels.values()))}); mark test patients in cohort.csv or add patients: {err}"
        ) from err
    return sorted(test)


def _arrival_rank(seed: int, patient_id: str) -> str:
    """A patient's place in the queue for the test set: a hash of (seed, id), not its arrival time."""
    return hashlib.sha256(f"{seed}:{patient_id}".encode()).hexdigest()


def _assign_arrivals(
    arrivals: Sequence[str], labels: dict[str, str], test: Set[str], test_fraction: float, seed: int
) -> set[str]:
    """New patients that join the test set: per label, enough to reach round(test_fraction x n_label)."""
    chosen: set[str] = set()
    for label in LABELS:
        n_label = sum(1 for v in labels.values() if v == label)
        have = sum(1 for p in test if labels[p] == label)
        need = max(0, math.floor(test_fraction * n_label + 0.5) - have)
        queue = sorted((p for p in arrivals if labels[p] == label), key=lambda p: _arrival_rank(seed, p))
        chosen.update(queue[:need])
    return chosen


def _frozen_test(
    labels: dict[str, str], marked: list[str], frozen: FrozenRoles, test_fraction: float, seed: int
) -> tuple[list[str], bool, list[str]]:
    """The test set of a later draw, whether it counts as generated, and notes (module docstring)."""
    notes = [
        f"patient {p} is marked split=test in cohort.csv but earlier fold models trained or validated on it: "
        "it stays in the development set (`rice split --reset` redraws)"
        for p in marked
        if p in frozen.development
    ]
    generated = frozen.test_generated
    if generated is None:
        generated = not (frozen.test & set(marked))
    test = (frozen.test & set(labels)) | {p for p in marked if p not in frozen.development}
    if generated:
        known = frozen.test | frozen.development | set(marked)
        arrivals = sorted(p for p in labels if p not in known)
        test |= _assign_arrivals(arrivals, labels, test, test_fraction, seed)
    return sorted(test), generated, notes


def _check_classes(counts: Counter[str], n_folds: int) -> None:
    """Fail when cross-validation cannot train a two-class model in every fold."""
    if len(counts) < len(LABELS) or min(counts.values()) < 2:
        raise ValueError(
            f"the development set needs at least 2 patients of each label to train every fold; "
            f"got {dict(counts)}"
        )
    if sum(counts.values()) < n_folds:
        raise ValueError(f"{sum(counts.values())} development patients cannot fill {n_folds} folds")


def _folds(
    labels: dict[str, str], dev: list[str], n_folds: int, seed: int
) -> tuple[tuple[Fold, ...], list[str]]:
    """Label-stratified patient-level folds of the development set, plus notes on thin folds."""
    from sklearn.model_selection import StratifiedKFold  # 0.8 s: only the step that splits loads it

    y = np.array([labels[p] for p in dev])
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reported below as notes, per fold
        try:
            parts = list(splitter.split(np.zeros(len(dev)), y))
        except ValueError as err:
            raise ValueError(f"cannot split {dict(Counter(y.tolist()))} into {n_folds} folds: {err}") from err
    folds, notes = [], []
    for index, (train_idx, val_idx) in enumerate(parts):
        train = tuple(sorted(dev[i] for i in train_idx))
        val = tuple(sorted(dev[i] for i in val_idx))
        if {labels[p] for p in train} != set(LABELS):
            raise ValueError(f"fold {index} would train on one label only; add patients or use fewer folds")
        missing = sorted(set(LABELS) - {labels[p] for p in val})
        if missing:
            notes.append(f"fold {index}: no {'/'.join(missing)} patient in the validation set")
        folds.append(Fold(index=index, train=train, val=val))
    return tuple(folds), notes


def make_splits(
    patients: Sequence[PatientRow],
    n_folds: int = 5,
    test_fraction: float = 0.13,
    seed: int = 2026,
    frozen: FrozenRoles | None = None,
) -> Splits:
    """Split a cohort into the test set and `n_folds` label-stratified development folds.

    Args:
        patients: one `(patient_id, label, split)` per patient, as in cohort.csv: label `rice`,
            `recurrence` or empty/None (unlabelled); split `test` or empty/None.
        n_folds: number of cross-validation folds (at least 2).
        test_fraction: share of labelled patients held out as the test set when none is marked
            (0 <= test_fraction < 1; 0 means no test set), and kept per label as patients arrive.
        seed: seed of the hold-out, of the arrivals' order and of the fold assignment.
        frozen: what earlier splits fixed; None or empty draws afresh (module docstring).

    Raises:
        ValueError: duplicate ids, unknown labels or split values, bad `n_folds`/`test_fraction`,
            or too few patients of a label to hold out a stratified test set or to train every fold.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    labels, marked, unlabelled = _parse(patients)
    notes: list[str] = []
    if frozen is None or frozen.empty:
        generated = not marked
        test = _hold_out(labels, test_fraction, seed) if generated else marked
    else:
        test, generated, notes = _frozen_test(labels, marked, frozen, test_fraction, seed)
    dev = sorted(set(labels) - set(test))
    _check_classes(Counter(labels[p] for p in dev), n_folds)
    folds, fold_notes = _folds(labels, dev, n_folds, seed)
    notes += fold_notes
    for note in notes:
        logger.warning("cv split: %s", note)
    return Splits(
        test=tuple(test),
        folds=folds,
        unlabelled=tuple(unlabelled),
        labels=labels,
        test_generated=generated,
        seed=seed,
        test_fraction=test_fraction,
        notes=tuple(notes),
    )


def leakage_problems(splits: Splits) -> list[str]:
    """Every way a patient leaks between sets; an empty list means the split is clean.

    Checks: a patient in two folds' validation sets; a test patient in any fold (training or
    validation); a patient in both the training and the validation set of one fold; an unlabelled
    patient in the test set or in any fold.

    Args:
        splits: the split to check.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for fold in splits.folds:
        for pid in fold.val:
            if pid in seen:
                problems.append(
                    f"patient {pid} is in the validation sets of folds {seen[pid]} and {fold.index}"
                )
            seen.setdefault(pid, fold.index)
        for pid in sorted(set(fold.train) & set(fold.val)):
            problems.append(f"patient {pid} is in both training and validation of fold {fold.index}")
    in_folds = {pid for fold in splits.folds for pid in (*fold.train, *fold.val)}
    for pid in sorted(set(splits.test) & in_folds):
        problems.append(f"patient {pid} is in both the test set and the development set")
    for pid in sorted(set(splits.unlabelled) & (in_folds | set(splits.test))):
        problems.append(f"unlabelled patient {pid} is in the test or development set")
    return problems


def frozen_problems(splits: Splits, frozen: FrozenRoles) -> list[str]:
    """Every way a split breaks what earlier splits fixed; an empty list means it keeps them.

    Checks: an earlier test patient that is still labelled in the cohort but not in the test set; an
    earlier development patient (trained or validated on) in the test set.

    Args:
        splits: the new split.
        frozen: what earlier splits fixed.
    """
    test = set(splits.test)
    problems = [
        f"patient {pid} was in the test set and left it"
        for pid in sorted(frozen.test & set(splits.labels) - test)
    ]
    problems += [
        f"patient {pid} was trained or validated on and is now in the test set"
        for pid in sorted(frozen.development & test)
    ]
    return problems
