from typing import Any

import pytest

from data_catalog import ArtifactRecord, Catalog, ParentRef, artifact_id, parse_artifact_id
from tests.data_catalog.conftest import sha


def _counts(catalog: Catalog) -> tuple[int, int]:
    (row,) = catalog.query(
        "SELECT (SELECT count(*) FROM artifacts) AS artifacts, (SELECT count(*) FROM lineage) AS lineage"
    )
    return row["artifacts"], row["lineage"]


def _registered(patient: str, tag: str = "v1") -> list[ArtifactRecord]:
    def raw(channel: str) -> ParentRef:
        return ParentRef.artifact("raw_scans", patient, channel)

    def record(name: str, *parents: ParentRef, **extra: Any) -> ArtifactRecord:
        return ArtifactRecord(
            name,
            f"/lake/rv/{patient}/{name}.{tag}",
            sha(tag + name),
            profile="quick",
            settings={"spacing_mm": 4.0},
            code_version="abc123",
            run_id="run-1",
            parents=parents,
            **extra,
        )

    return [
        record("mri_postop", raw("mri_postop"), metadata={"tag": tag}),
        record("mri_event", raw("mri_event"), raw("mri_postop")),
        record("dose", ParentRef.artifact("dose_maps", patient, "dose"), raw("mri_postop")),
        record("brain_mask", ParentRef.artifact("registered_volumes", patient, "mri_postop", "quick")),
    ]


def _pipeline(catalog: Catalog, patient: str) -> None:
    """scans -> raw_scans -> dose_maps -> registered_volumes, as the assets record them."""
    catalog.record_artifacts(
        "raw_scans",
        patient,
        [
            ArtifactRecord(
                ch, f"/lake/raw/{patient}/{ch}", sha("raw" + ch), parents=(ParentRef.scan(patient, ch),)
            )
            for ch in ("mri_postop", "mri_event", "dose")
        ],
    )
    catalog.record_artifacts(
        "dose_maps",
        patient,
        [ArtifactRecord("dose", parents=(("raw_scans/" + patient + "/dose", "artifact"),))],
    )
    catalog.record_artifacts("registered_volumes", patient, _registered(patient))


def test_ids_are_stable_and_parse_back() -> None:
    assert artifact_id("fold_models", "dose|3", "model.pt") == "fold_models/dose|3/model.pt"
    assert parse_artifact_id("lake_asset/P1/sub/file.nii.gz") == ("lake_asset", "P1", "sub/file.nii.gz")
    for bad in [("scan", "P1", "x"), ("a/b", "P1", "x"), ("a", "", "x"), ("a", "P1", "")]:
        with pytest.raises(ValueError):
            artifact_id(*bad)
    with pytest.raises(ValueError):
        parse_artifact_id("scan/P1/dose")


def test_recorded_artifact_round_trips(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    art = cohort.get_artifact("registered_volumes@quick/P1/mri_event")
    assert art is not None
    assert (art.asset, art.partition_key, art.name) == ("registered_volumes", "P1", "mri_event")
    assert (art.path, art.sha256, art.profile, art.code_version, art.run_id) == (
        "/lake/rv/P1/mri_event.v1", sha("v1mri_event"), "quick", "abc123", "run-1")  # fmt: skip
    assert art.settings == {"spacing_mm": 4.0}
    assert set(art.parents) == {
        ParentRef("raw_scans/P1/mri_event", "artifact"),
        ParentRef("raw_scans/P1/mri_postop", "artifact"),
    }
    assert art.created is not None
    assert [a.name for a in cohort.artifacts("registered_volumes", "P1")] == [
        "brain_mask", "dose", "mri_event", "mri_postop"]  # fmt: skip
    assert cohort.get_artifact("registered_volumes@quick/P1/nothing") is None


def test_artifacts_by_partition_equal_one_query_per_partition(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    _pipeline(cohort, "P2")
    found = cohort.artifacts_by_partition("registered_volumes", ["P2", "P1", "P3", "P1"], profile="quick")
    assert sorted(found) == ["P1", "P2"]  # P3 has none recorded: absent
    for key in ("P1", "P2"):
        assert found[key] == cohort.artifacts("registered_volumes", key, profile="quick")
    assert cohort.artifacts_by_partition("registered_volumes", ["P1"], profile=None) == {}
    assert cohort.artifacts_by_partition("raw_scans", ["P1"], profile=None)["P1"] == cohort.artifacts(
        "raw_scans", "P1", profile=None
    )
    assert cohort.artifacts_by_partition("raw_scans", [], profile=None) == {}
    every = cohort.artifacts_by_partition("registered_volumes", profile="quick")  # no keys: all partitions
    assert every == {key: found[key] for key in ("P1", "P2")}


def test_re_recording_a_partition_replaces_its_rows(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    _pipeline(cohort, "P2")
    counts = _counts(cohort)
    cohort.record_artifacts("registered_volumes", "P1", _registered("P1"))
    assert _counts(cohort) == counts

    cohort.record_artifacts("registered_volumes", "P1", _registered("P1", tag="v2"))
    assert _counts(cohort) == counts
    art = cohort.get_artifact("registered_volumes@quick/P1/mri_postop")
    assert art is not None and (art.path, art.sha256, art.metadata) == (
        "/lake/rv/P1/mri_postop.v2", sha("v2mri_postop"), {"tag": "v2"})  # fmt: skip
    other = cohort.get_artifact("registered_volumes@quick/P2/mri_postop")
    assert other is not None and other.path == "/lake/rv/P2/mri_postop.v1"

    # Fewer outputs: the dropped artifact and its lineage rows go, in the same call.
    cohort.record_artifacts("registered_volumes", "P1", _registered("P1")[:1])
    assert _counts(cohort) == (counts[0] - 3, counts[1] - 5)
    cohort.record_artifacts("registered_volumes", "P1", [])  # no profile: the quick rows stay
    assert len(cohort.artifacts("registered_volumes", "P1")) == 1
    cohort.record_artifacts("registered_volumes", "P1", [], profile="quick")
    assert cohort.artifacts("registered_volumes", "P1") == []


def test_ancestors_reach_the_source_scans_with_checksums(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    nodes = cohort.ancestors("registered_volumes@quick/P1/dose")
    assert [(n.id, n.kind, n.depth) for n in nodes] == [
        ("dose_maps/P1/dose", "artifact", 1),
        ("raw_scans/P1/mri_postop", "artifact", 1),
        ("raw_scans/P1/dose", "artifact", 2),
        ("scan/P1/mri_postop", "scan", 2),
        ("scan/P1/dose", "scan", 3),
    ]
    scan = nodes[-1]
    assert (scan.source_path, scan.sha256, scan.patient_id, scan.channel) == (
        "/landing/P1/dose.nii.gz", sha("P1/dose"), "P1", "dose")  # fmt: skip
    raw = nodes[2]
    assert (raw.path, raw.sha256, raw.asset, raw.partition_key, raw.name, raw.source_path) == (
        "/lake/raw/P1/dose", sha("rawdose"), "raw_scans", "P1", "dose", None)  # fmt: skip
    assert all(n.known for n in nodes)


def test_ancestors_take_the_shortest_depth_through_a_diamond(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    nodes = cohort.ancestors("registered_volumes@quick/P1/brain_mask")
    assert [(n.id, n.depth) for n in nodes] == [
        ("registered_volumes@quick/P1/mri_postop", 1),
        ("raw_scans/P1/mri_postop", 2),
        ("scan/P1/mri_postop", 3),
    ]
    assert cohort.ancestors("scan/P1/dose") == []


def test_descendants(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    _pipeline(cohort, "P2")
    nodes = cohort.descendants("scan/P1/mri_postop")
    assert [(n.id, n.depth) for n in nodes] == [
        ("raw_scans/P1/mri_postop", 1),
        ("registered_volumes@quick/P1/dose", 2),
        ("registered_volumes@quick/P1/mri_event", 2),
        ("registered_volumes@quick/P1/mri_postop", 2),
        ("registered_volumes@quick/P1/brain_mask", 3),
    ]


def test_a_dropped_parent_shows_as_unknown(cohort: Catalog) -> None:
    _pipeline(cohort, "P1")
    cohort.record_artifacts(
        "raw_scans", "P1", [ArtifactRecord("mri_postop", parents=(ParentRef.scan("P1", "mri_postop"),))]
    )
    nodes = {n.id: n for n in cohort.ancestors("registered_volumes@quick/P1/dose")}
    assert nodes["raw_scans/P1/dose"].known is False
    assert nodes["raw_scans/P1/dose"].path is None
    assert nodes["scan/P1/mri_postop"].known is True


def test_parents_must_be_recorded(cohort: Catalog) -> None:
    with pytest.raises(ValueError, match="scan scan/P9/dose"):
        cohort.record_artifacts(
            "raw_scans", "P9", [ArtifactRecord("dose", parents=(("scan/P9/dose", "scan"),))]
        )
    with pytest.raises(ValueError, match="artifact raw_scans/P1/dose"):
        cohort.record_artifacts(
            "dose_maps", "P1", [ArtifactRecord("dose", parents=(("raw_scans/P1/dose", "artifact"),))]
        )
    assert _counts(cohort) == (0, 0)
    cohort.record_artifacts(
        "dose_maps",
        "P1",
        [ArtifactRecord("dose", parents=(("raw_scans/P1/dose", "artifact"),))],
        check_parents=False,
    )
    assert _counts(cohort) == (1, 1)


def test_bad_artifact_input_is_refused(cohort: Catalog) -> None:
    with pytest.raises(ValueError, match="more than once"):
        cohort.record_artifacts("raw_scans", "P1", [ArtifactRecord("dose"), ArtifactRecord("dose")])
    with pytest.raises(ValueError, match="parent kind"):
        ArtifactRecord("x", parents=(("scan/P1/dose", "file"),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sha256"):
        ArtifactRecord("x", sha256="ABC")
    with pytest.raises(ValueError, match="'scan'"):
        cohort.record_artifacts("scan", "P1", [ArtifactRecord("x")])
