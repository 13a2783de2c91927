"""Experiment identity: what a fold model, an evaluation, the champion and its outputs belong to.

An *experiment version* is a short hash of everything that makes the fold models what they are, after
nnU-Net's identifiers (dataset fingerprint -> plans -> configuration -> trainer):

- the profile's settings, training overrides included (`experiment_settings`; the occlusion settings are
  left out: they change the maps, not the models);
- the frozen split: the test set, every fold's training and validation patients, and their labels;
- the input data version of every patient in the split: a hash of the checksums of its registered
  volumes for the profile (`data_version`);
- the training code version (`rice_models.provenance.training_code_version`).

`cv_splits` declares the experiment; each `fold_models` cell computes the version of what it really
trained; `check_cells` compares the cells with the declared version (missing and stale cells), so only
complete, current experiments are evaluated and compared. `fold_seed` gives every cell its own seed.
"""

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from rice_models.channels import COMBINATIONS, fold_keys
from rice_models.profiles import Profile, get_profile
from rice_models.splits import Splits

EXPERIMENT_TAG = "rice.experiment_version"
"""MLflow run tag and model-version tag holding the experiment version."""
VERSION_LENGTH = 16
NOT_IN_EXPERIMENT: tuple[str, ...] = ("occlusion_mask_size", "occlusion_overlap")
"""Profile settings that do not change a fold model (they change occlusion maps only)."""


def _digest(payload: Any, length: int = VERSION_LENGTH) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fold_seed(seed: int, combination: str, fold: int | str) -> int:
    """The training seed of one cell, derived from the profile's seed, the combination and the fold.

    Five folds of one combination (and one fold of seven combinations) no longer share one seed, and
    the same cell gets the same seed in every run.

    Args:
        seed: the profile's `train_seed`.
        combination: one of `rice_models.channels.COMBINATIONS`.
        fold: the fold index or key.

    Returns:
        An integer in [0, 2**31).

    Raises:
        ValueError: unknown combination or a negative fold.
    """
    if combination not in COMBINATIONS:
        raise ValueError(f"unknown combination {combination!r}")
    if int(fold) < 0:
        raise ValueError(f"fold must be >= 0, got {fold}")
    digest = hashlib.sha256(f"{int(seed)}|{combination}|{int(fold)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def experiment_settings(profile: Profile) -> dict[str, Any]:
    """The profile settings an experiment version covers (all but `NOT_IN_EXPERIMENT`), JSON-ready."""
    return {k: v for k, v in profile.as_dict().items() if k not in NOT_IN_EXPERIMENT}


def data_version(checksums: Mapping[str, str | None]) -> str:
    """One patient's input data version: a hash of the checksums of its registered volumes (by name).

    Raises:
        ValueError: no checksums, or a missing one.
    """
    if not checksums or any(not v for v in checksums.values()):
        raise ValueError(f"every registered volume needs a checksum, got {dict(checksums)}")
    return _digest(dict(checksums))


def split_payload(splits: Splits) -> dict[str, Any]:
    """The part of a split an experiment version covers: test set, folds and the labels of all."""
    used = {*splits.test, *splits.development}
    return {
        "test": list(splits.test),
        "folds": [[list(f.train), list(f.val)] for f in splits.folds],
        "labels": {p: splits.labels[p] for p in sorted(used)},
    }


def experiment_version(
    settings: Mapping[str, Any], splits: Splits, data_versions: Mapping[str, str], code_version: str
) -> str:
    """The experiment version (module docstring): a 16-hex-digit hash.

    Args:
        settings: `experiment_settings(profile)` of the profile as trained (overrides included).
        splits: the frozen split.
        data_versions: patient -> `data_version` of every patient in the test set and the folds.
        code_version: `training_code_version()`.

    Raises:
        ValueError: a patient of the split without a data version.
    """
    used = {*splits.test, *splits.development}
    if missing := sorted(used - set(data_versions)):
        raise ValueError(f"patients without a data version: {missing}")
    payload = {
        "settings": dict(settings),
        "split": split_payload(splits),
        "data": {p: data_versions[p] for p in sorted(used)},
        "code": code_version,
    }
    return _digest(payload)


@dataclasses.dataclass(frozen=True)
class CellVersion:
    """The experiment version a trained cell carries (None: recorded before experiments existed)."""

    combination: str
    fold: int
    experiment_version: str | None

    @property
    def key(self) -> str:
        """The cell's partition key, `combination|fold`."""
        return f"{self.combination}|{self.fold}"


@dataclasses.dataclass(frozen=True)
class CellCheck:
    """Which cells an evaluation may use.

    Args:
        current: the declared experiment version.
        compared: combinations with at least one cell of `current` (in `COMBINATIONS` order).
        problems: one line per missing or stale cell of a compared combination (empty: all current).
        left_out: combinations whose cells all belong to other experiments (not compared).
    """

    current: str
    compared: tuple[str, ...]
    problems: tuple[str, ...]
    left_out: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return bool(self.compared) and not self.problems

    def describe(self) -> str:
        """One paragraph for a check result or an error message."""
        if not self.compared:
            return f"no fold model belongs to the current experiment {self.current}: train fold_models"
        if self.problems:
            return (
                f"experiment {self.current} is incomplete or mixed: {'; '.join(self.problems)}. "
                "Re-materialise these fold_models cells (same config as cv_splits) before comparing."
            )
        left = f"; left out (no cell of this experiment): {', '.join(self.left_out)}" if self.left_out else ""
        return f"every cell of {', '.join(self.compared)} belongs to experiment {self.current}{left}"


def check_cells(current: str, n_folds: int, cells: Sequence[CellVersion]) -> CellCheck:
    """Compare trained cells with the declared experiment version.

    A combination is compared when at least one of its cells carries `current`; each of its `n_folds`
    cells must then exist and carry `current`, else it is named as missing or stale. Combinations whose
    cells all belong to other experiments are left out.

    Args:
        current: the experiment version `cv_splits` declared.
        n_folds: folds per combination.
        cells: the trained cells of the profile.

    Raises:
        ValueError: a cell of an unknown combination.
    """
    by_key = {c.key: c for c in cells}
    if unknown := sorted({c.combination for c in cells} - set(COMBINATIONS)):
        raise ValueError(f"unknown combinations {unknown}")
    trained = {c.combination for c in cells}
    current_combinations = {c.combination for c in cells if c.experiment_version == current}
    compared = tuple(c for c in COMBINATIONS if c in current_combinations)
    problems = []
    for combination in compared:
        for fold in fold_keys(n_folds):
            found = by_key.get(f"{combination}|{fold}")
            if found is None:
                problems.append(f"{combination}|{fold} missing")
            elif found.experiment_version != current:
                seen = found.experiment_version or "unversioned"
                problems.append(f"{combination}|{fold} stale (experiment {seen})")
    left_out = tuple(c for c in COMBINATIONS if c in trained and c not in compared)
    return CellCheck(current, compared, tuple(problems), left_out)


def profile_from_settings(settings: Mapping[str, Any], **overrides: Any) -> Profile:
    """The profile an experiment's recorded settings describe (JSON lists back to tuples), with overrides.

    Args:
        settings: `experiment_settings(profile)`, e.g. read back from `splits.json`.
        **overrides: settings that replace the recorded ones (e.g. a cell's own run config).

    Raises:
        ValueError: an unknown profile name or setting.
    """
    known = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in known}
    return get_profile(str(settings["name"]), **{**values, **overrides})
