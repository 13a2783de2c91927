"""The QC gate of the cohort, experiment versions, cell seeds and the completeness of an experiment."""

from datetime import datetime, timedelta

import pytest

from rice_models.channels import COMBINATIONS
from rice_models.experiment import (
    CellVersion,
    check_cells,
    data_version,
    experiment_settings,
    experiment_version,
    fold_seed,
)
from rice_models.profiles import get_profile
from rice_models.provenance import SPLIT_MODULES, TRAINING_MODULES, source_version, training_code_version
from rice_models.qc import GATING_CHECKS, Preprocessed, exclusion_reason, gate
from rice_models.splits import make_splits

GOOD = {"dose_problems": [], "nonfinite": {"dose": False}, "brain_volume_ok": True, "ncc_ok": True}
T0 = datetime(2026, 1, 1)

QC_CASES = [
    pytest.param({}, None, id="passes"),
    pytest.param({"dose_problems": ["maximum 6180 Gy"]}, "dose_plausible: maximum 6180", id="dose"),
    pytest.param({"nonfinite": {"mri_event": True, "dose": False}}, "NaN or Inf in mri_event", id="nan"),
    pytest.param({"brain_volume_ok": False, "brain_volume_ml": 412.0}, "brain_mask_volume: 412", id="mask"),
    pytest.param({"ncc_ok": False, "ncc_event_postop": 0.31}, "registration_similarity: NCC 0.310", id="ncc"),
    pytest.param({"accepted": False}, "preprocessing refused", id="refused"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "expected"), QC_CASES)
def test_each_gating_check_excludes_with_its_reason(change: dict, expected: str | None) -> None:
    reason = exclusion_reason(Preprocessed("P1", {**GOOD, **change}, T0), "quick")
    assert reason == expected if expected is None else expected in str(reason)


def test_missing_stale_and_unrecorded_preprocessing_are_excluded() -> None:
    records = [
        Preprocessed("A", GOOD, T0, {"dose_maps": T0 - timedelta(1)}),
        Preprocessed("B", None),
        Preprocessed("C", GOOD, T0, {"dose_maps": T0 + timedelta(1)}),
        Preprocessed("D", {"ncc_ok": True}, T0),
    ]
    accepted, excluded = gate(records, "paper")
    assert accepted == ["A"]
    assert "no registered_volumes for profile paper" in excluded["B"]
    assert "dose_maps re-made after registered_volumes" in excluded["C"]
    assert all(
        f"{check}: not recorded" in excluded["D"]
        for check in GATING_CHECKS
        if check != "registration_similarity"
    )


def test_fold_seeds_differ_per_cell_and_repeat() -> None:
    seeds = {fold_seed(0, c, f) for c in COMBINATIONS for f in range(5)}
    assert len(seeds) == 35 and all(0 <= s < 2**31 for s in seeds)
    assert fold_seed(0, "dose", 3) == fold_seed(0, "dose", "3") != fold_seed(1, "dose", 3)
    with pytest.raises(ValueError):
        fold_seed(0, "all", 0)


def _rows(n: int) -> list[tuple[str, str, str]]:
    return [(f"P{i:02d}", ("rice", "recurrence")[i % 2], "") for i in range(n)]


def test_experiment_version_moves_with_each_of_its_parts() -> None:
    profile = get_profile("quick")
    splits = make_splits(_rows(30))
    data = {p: data_version({"dose": f"{p}-sha"}) for p in splits.labels}
    base = experiment_version(experiment_settings(profile), splits, data, "code1")
    assert base == experiment_version(experiment_settings(profile), splits, dict(data), "code1")
    assert len(base) == 16
    changed = [
        experiment_version(experiment_settings(get_profile("quick", epochs=3)), splits, data, "code1"),
        experiment_version(experiment_settings(profile), make_splits(_rows(30), seed=1), data, "code1"),
        experiment_version(experiment_settings(profile), splits, {**data, "P00": "other"}, "code1"),
        experiment_version(experiment_settings(profile), splits, data, "code2"),
    ]
    assert base not in changed and len(set(changed)) == 4
    same = experiment_settings(get_profile("quick", occlusion_mask_size=4))
    assert experiment_version(same, splits, data, "code1") == base, "occlusion settings change maps only"
    with pytest.raises(ValueError, match="data version"):
        experiment_version(experiment_settings(profile), splits, {"P00": "x"}, "code1")
    with pytest.raises(ValueError):
        data_version({"dose": None})


def test_check_cells_names_missing_and_stale_cells() -> None:
    cells = [CellVersion("dose", f, "new") for f in range(5)]
    cells += [CellVersion("event", f, "new") for f in (0, 1, 2)] + [CellVersion("event", 4, "old")]
    cells += [CellVersion("postop", f, "old") for f in range(5)]
    check = check_cells("new", 5, cells)
    assert check.compared == ("event", "dose") and check.left_out == ("postop",)
    assert check.problems == ("event|3 missing", "event|4 stale (experiment old)") and not check.ok
    assert "event|3 missing" in check.describe()
    fine = check_cells("new", 5, cells[:5] + cells[-5:])
    assert fine.ok and fine.compared == ("dose",) and "left out" in fine.describe()
    nothing = check_cells("newer", 5, cells)
    assert not nothing.ok and nothing.compared == () and "train fold_models" in nothing.describe()


def test_code_versions_hash_the_source_of_their_modules() -> None:
    version = training_code_version()
    assert version == source_version(TRAINING_MODULES) and len(version) == 12
    assert int(version, 16) >= 0 and version != source_version(SPLIT_MODULES)
    assert source_version(("training",)) != source_version(("data",))
    with pytest.raises(FileNotFoundError):
        source_version(("no_such_module",))
