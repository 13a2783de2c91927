from pathlib import Path

import dagster as dg

from data_catalog import ArtifactRecord, Catalog
from rice_assets.assets.cohort import cohort_manifest
from rice_assets.checks import cohort_has_no_problems
from rice_assets.constants import PATIENTS_PARTITION
from rice_assets.sensors import landing_zone_sensor as new_patients_sensor
from rice_models.paths import RicePaths
from tests.conftest import make_patient, write_cohort


def _materialize(resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize([cohort_manifest, cohort_has_no_problems], resources=resources, instance=instance)


def test_cohort_manifest_upserts_patients_and_adds_partitions(tiny_landing, rice_paths, resources, instance):
    tiny_landing(3)
    result = _materialize(resources, instance)
    assert result.success
    assert sorted(instance.get_dynamic_partitions(PATIENTS_PARTITION)) == ["P1", "P2", "P3"]
    catalog = Catalog(rice_paths.catalog)
    assert sorted(catalog.patient_ids()) == ["P1", "P2", "P3"]
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    metadata = result.asset_materializations_for_node("cohort_manifest")[0].metadata
    assert metadata["patients"].value == 3 and metadata["new_partitions"].value == 3


def test_bad_patient_rejected_others_go_on(tiny_landing, rice_paths, resources, instance):
    landing = tiny_landing(2)
    make_patient(landing, "BAD", channels=("mri_postop",))
    rows = [
        {"patient_id": "P1", "label": "rice", "dose_kind": "total"},
        {"patient_id": "P2", "label": "recurrence", "dose_kind": "total"},
        {"patient_id": "BAD", "label": "rice", "dose_kind": "total"},
    ]
    write_cohort(landing, rows)
    result = _materialize(resources, instance)
    assert result.success
    assert sorted(instance.get_dynamic_partitions(PATIENTS_PARTITION)) == ["P1", "P2"]
    assert "BAD" not in Catalog(rice_paths.catalog).patient_ids()
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "BAD" in check.description


def test_rematerialising_is_idempotent(tiny_landing, rice_paths, resources, instance):
    tiny_landing(2)
    _materialize(resources, instance)
    result = _materialize(resources, instance)
    assert result.asset_materializations_for_node("cohort_manifest")[0].metadata["new_partitions"].value == 0
    assert sorted(Catalog(rice_paths.catalog).patient_ids()) == ["P1", "P2"]


def test_sensor_adds_exactly_the_new_patients(tiny_landing, resources, instance, monkeypatch):
    monkeypatch.setenv("RICE_SETTLE_SECONDS", "0")
    landing = tiny_landing(2)
    instance.add_dynamic_partitions(PATIENTS_PARTITION, ["P1"])
    context = dg.build_sensor_context(instance=instance, resources={"rice_home": resources["rice_home"]})
    result = new_patients_sensor(context)
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == ["P2"]
    assert {e.partition for e in result.asset_events} == {"P1", "P2"}, "P1 (known, never observed) adopted"
    ingest, preprocess = result.run_requests
    assert [k.to_user_string() for k in ingest.asset_selection] == ["cohort_manifest"]
    assert preprocess.partition_key == "P2"
    assert {k.to_user_string() for k in preprocess.asset_selection} == {
        "raw_scans",
        "dose_maps",
        "registered_volumes",
    }
    make_patient(landing, "P3")
    write_cohort(
        landing,
        [{"patient_id": p, "label": "rice", "dose_kind": "total"} for p in ("P1", "P2", "P3")]
        + [{"patient_id": "P4", "label": "rice", "dose_kind": "total"}],  # P4 has no folder: not added
    )
    instance.add_dynamic_partitions(PATIENTS_PARTITION, ["P2"])
    context = dg.build_sensor_context(
        instance=instance, resources={"rice_home": resources["rice_home"]}, cursor=result.cursor
    )
    result = new_patients_sensor(context)
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == ["P3"]


def test_sensor_skips_when_nothing_new(tiny_landing, resources, instance, monkeypatch):
    monkeypatch.setenv("RICE_SETTLE_SECONDS", "0")
    tiny_landing(1)
    instance.add_dynamic_partitions(PATIENTS_PARTITION, ["P1"])
    context = dg.build_sensor_context(instance=instance, resources={"rice_home": resources["rice_home"]})
    result = new_patients_sensor(context)
    assert not result.run_requests and "no new" in str(result.skip_reason)


def _derived(paths: RicePaths, catalog: Catalog, pid: str) -> list[Path]:
    """Derived files of one patient in the lake, as the pipeline writes them, recorded in the catalog."""
    files = [paths.lake_dir("raw_scans", pid) / "mri_postop.nii.gz"]
    files += [
        paths.lake_dir("registered_volumes", pid, profile) / "dose.nii.gz" for profile in ("quick", "paper")
    ]
    files.append(paths.lake_dir("occlusion_maps", pid, "quick") / "overlay.png")
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    catalog.record_artifacts("raw_scans", pid, [ArtifactRecord("mri_postop", str(files[0]))])
    for profile, path in (("quick", files[1]), ("paper", files[2])):
        catalog.record_artifacts(
            "registered_volumes", pid, [ArtifactRecord("dose", str(path), profile=profile)]
        )
    return files


def test_a_patient_removed_from_cohort_csv_is_withdrawn(
    tiny_landing, rice_paths, resources, instance, monkeypatch
):
    monkeypatch.setenv("RICE_SETTLE_SECONDS", "0")
    landing = tiny_landing(3)
    _materialize(resources, instance)
    catalog = Catalog(rice_paths.catalog)
    gone, kept = _derived(rice_paths, catalog, "P3"), _derived(rice_paths, catalog, "P1")
    write_cohort(landing, [{"patient_id": f"P{i}", "label": "rice", "dose_kind": "total"} for i in (1, 2)])
    context = dg.build_sensor_context(instance=instance, resources={"rice_home": resources["rice_home"]})
    (request,) = new_patients_sensor(context).run_requests
    assert "|P3|" in request.run_key and request.asset_selection == [cohort_manifest.key]

    result = _materialize(resources, instance)
    metadata = result.asset_materializations_for_node("cohort_manifest")[0].metadata
    assert metadata["withdrawn_patients"].value == ["P3"]
    assert sorted(instance.get_dynamic_partitions(PATIENTS_PARTITION)) == ["P1", "P2"]
    patient = catalog.get_patient("P3")
    assert patient is not None and patient.withdrawn is not None, "the catalog says when"
    assert [p.patient_id for p in catalog.patients(active_only=True)] == ["P1", "P2"]
    assert catalog.artifacts(partition_key="P3") == [] and catalog.get_scans("P3") == []
    assert not any(path.exists() for path in gone) and all(path.exists() for path in kept)
    assert (landing / "P3" / "mri_postop.nii.gz").exists(), "the landing zone is the site's: untouched"


def test_an_emptied_cohort_csv_withdraws_nobody(tiny_landing, rice_paths, resources, instance):
    landing = tiny_landing(2)
    _materialize(resources, instance)
    write_cohort(landing, [])
    _materialize(resources, instance)
    assert [p.patient_id for p in Catalog(rice_paths.catalog).patients(active_only=True)] == ["P1", "P2"]
