"""Schema version 2: profiles that coexist, withdrawn patients, frozen splits, experiments."""

from pathlib import Path

import pytest

from data_catalog import (
    MIGRATIONS,
    ArtifactRecord,
    Catalog,
    ExperimentRecord,
    ParentRef,
    PatientRecord,
    SplitRecord,
    migrate,
    transaction,
)
from tests.data_catalog.conftest import sha


def _volumes(profile: str, tag: str) -> list[ArtifactRecord]:
    return [
        ArtifactRecord(
            name, f"/lake/registered_volumes/{profile}/P1/{name}", sha(tag + name), profile=profile
        )
        for name in ("mri_postop", "dose")
    ]


def test_two_profiles_of_one_partition_coexist(cohort: Catalog) -> None:
    cohort.record_artifacts("registered_volumes", "P1", _volumes("quick", "q"))
    cohort.record_artifacts("registered_volumes", "P1", _volumes("paper", "p"))
    cohort.record_artifacts("registered_volumes", "P1", _volumes("quick", "q2"))  # re-run quick only
    quick = cohort.get_artifact("registered_volumes@quick/P1/dose")
    paper = cohort.get_artifact("registered_volumes@paper/P1/dose")
    assert quick is not None and quick.sha256 == sha("q2dose")
    assert paper is not None and paper.sha256 == sha("pdose")
    assert [a.profile for a in cohort.artifacts("registered_volumes", "P1", profile="paper")] == ["paper"] * 2
    assert len(cohort.artifacts("registered_volumes", "P1")) == 4
    cohort.record_artifacts("registered_volumes", "P1", [], profile="paper")
    assert cohort.artifacts("registered_volumes", "P1", profile="paper") == []
    assert len(cohort.artifacts("registered_volumes", "P1", profile="quick")) == 2
    parent = ParentRef.artifact("registered_volumes", "P1", "dose", "quick")
    cohort.record_artifacts(
        "fold_models", "dose|0", [ArtifactRecord("model", profile="quick", parents=(parent,))]
    )
    assert [n.id for n in cohort.ancestors("fold_models@quick/dose|0/model")] == [parent.id]


def test_one_call_records_one_profile(cohort: Catalog) -> None:
    mixed = [*_volumes("quick", "q")[:1], *_volumes("paper", "p")[1:]]
    with pytest.raises(ValueError, match="share one profile"):
        cohort.record_artifacts("registered_volumes", "P1", mixed)
    with pytest.raises(ValueError, match="recorded as profile"):
        cohort.record_artifacts("registered_volumes", "P1", _volumes("quick", "q"), profile="paper")
    with pytest.raises(ValueError, match="profile must match"):
        ArtifactRecord("x", profile="quick/1")


def test_withdrawn_patient_keeps_a_dated_row_and_loses_its_data(cohort: Catalog) -> None:
    cohort.record_artifacts("raw_scans", "P1", [ArtifactRecord("mri_postop", "/lake/raw_scans/P1/m.nii.gz")])
    cohort.record_artifacts("registered_volumes", "P1", _volumes("quick", "q"))
    cohort.record_artifacts("raw_scans", "P2", [ArtifactRecord("mri_postop", "/lake/raw_scans/P2/m.nii.gz")])
    cohort.replace_rows(
        "predictions",
        [{"patient_id": "P1", "scope": "test", "combination": "dose", "prob_rice": 0.4}],
        where={"scope": "test"},
    )
    removed = cohort.withdraw_patients(
        ["P1", "nobody"], partitioned_assets=["raw_scans", "registered_volumes"]
    )
    assert sorted(removed) == ["P1"]
    assert sorted(removed["P1"]) == sorted(
        [
            "/lake/raw_scans/P1/m.nii.gz",
            *(f"/lake/registered_volumes/quick/P1/{n}" for n in ("dose", "mri_postop")),
        ]
    )
    patient = cohort.get_patient("P1")
    assert patient is not None and patient.withdrawn is not None and patient.covariates == {}
    assert [p.patient_id for p in cohort.patients(active_only=True)] == ["P2", "P3"]
    assert cohort.artifacts(partition_key="P1") == [] and cohort.get_scans("P1") == []
    assert cohort.query("SELECT * FROM predictions") == []
    assert len(cohort.artifacts(partition_key="P2")) == 1
    assert cohort.withdraw_patients(["P1"], partitioned_assets=["raw_scans"]) == {}, "already withdrawn"
    cohort.upsert_patients([PatientRecord("P1", "rice")])  # back in cohort.csv
    assert cohort.get_patient("P1").withdrawn is None  # type: ignore[union-attr]


def _split(profile: str, version: str, test: list[str], dev: list[str], catalog: Catalog) -> None:
    records = [SplitRecord(p, "test") for p in test] + [SplitRecord(p, "val", 0) for p in dev]
    catalog.replace_splits(records, profile=profile, experiment_version=version)
    catalog.record_experiment(
        ExperimentRecord(version, profile, {"epochs": 1}, "code", {}, True, len(test), len(dev))
    )


def test_split_memory_spans_experiments_until_a_reset(catalog: Catalog) -> None:
    assert catalog.split_memory("quick").test_generated is None
    _split("quick", "e1", ["A"], ["B", "C"], catalog)
    _split("quick", "e2", ["A", "D"], ["B", "C", "E"], catalog)
    _split("paper", "e3", ["B"], ["A"], catalog)
    memory = catalog.split_memory("quick")
    assert (memory.test, memory.development) == ({"A", "D"}, {"B", "C", "E"})
    assert memory.test_generated is True and memory.reset_at is None
    when = catalog.reset_splits("quick", reason="protocol change")
    memory = catalog.split_memory("quick")
    assert (memory.test, memory.development, memory.test_generated) == (frozenset(), frozenset(), None)
    assert memory.reset_at == when
    assert catalog.split_memory("paper").test == {"B"}
    assert catalog.query("SELECT reason FROM split_resets") == [{"reason": "protocol change"}]


def test_an_experiment_is_recorded_once(catalog: Catalog) -> None:
    record = ExperimentRecord(
        "abc", "quick", {"epochs": 3}, "code1", {"P1": "d1"}, False, 2, 10, {"P9": "qc"}
    )
    catalog.record_experiment(record)
    catalog.record_experiment(ExperimentRecord("abc", "quick", {"epochs": 9}, "x", {}, True, 0, 0))
    assert catalog.get_experiment("abc") == record
    assert catalog.get_experiment("nope") is None
    with pytest.raises(ValueError, match="profile"):
        ExperimentRecord("v", None, {}, "c", {}, True, 0, 0)  # type: ignore[arg-type]


def test_a_version_1_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    with transaction(path) as con:
        migrate(con, MIGRATIONS[:1])
        con.execute(
            "INSERT INTO artifacts (artifact_id, asset, partition_key, name, profile, created) VALUES "
            "('raw_scans/P1/mri_postop', 'raw_scans', 'P1', 'mri_postop', NULL, now()), "
            "('registered_volumes/P1/dose', 'registered_volumes', 'P1', 'dose', 'quick', now()), "
            "('cv_splits/__all__/splits', 'cv_splits', '__all__', 'splits', 'quick', now())"
        )
        con.execute(
            "INSERT INTO lineage VALUES "
            "('registered_volumes/P1/dose', 'raw_scans/P1/mri_postop', 'artifact'), "
            "('cv_splits/__all__/splits', 'registered_volumes/P1/dose', 'artifact')"
        )
        con.execute(
            "INSERT INTO splits (patient_id, fold, role, artifact_id, created) "
            "VALUES ('P1', NULL, 'test', 'cv_splits/__all__/splits', now())"
        )
        con.execute("CREATE TABLE ablation (combination TEXT, test_f1 DOUBLE)")
    catalog = Catalog(path)
    assert catalog.schema_version() == 2
    assert [a.artifact_id for a in catalog.artifacts()] == [
        "cv_splits@quick/__all__/splits",
        "raw_scans/P1/mri_postop",
        "registered_volumes@quick/P1/dose",
    ]
    assert [n.id for n in catalog.ancestors("cv_splits@quick/__all__/splits")] == [
        "registered_volumes@quick/P1/dose",
        "raw_scans/P1/mri_postop",
    ]
    assert catalog.split_memory("quick").test == {"P1"}, "the earlier test set stays frozen"
    assert catalog.query("SELECT artifact_id FROM splits") == [
        {"artifact_id": "cv_splits@quick/__all__/splits"}
    ]
    columns = {r["column_name"] for r in catalog.query("DESCRIBE ablation")}
    assert {"profile", "experiment_version", "oof_f1", "champion"} <= columns
