"""The landing-zone sensor and the retraining schedule, tick by tick (`build_sensor_context`,
`build_schedule_context`) on a temporary landing zone and catalog: new, half-copied, invalid, unchanged and
changed folders; a schedule that skips when nothing changed and retrains when a labelled patient arrives."""

import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from data_catalog import Catalog, PatientRecord
from rice_assets.assets.landing import LANDING_SCANS, latest_version
from rice_assets.constants import PATIENTS_PARTITION, UNLABELLED_PARTITION
from rice_assets.resources import CatalogResource, RiceHomeResource
from rice_assets.schedules import retrain_when_cohort_changed
from rice_assets.sensors import landing_zone_sensor
from rice_models.paths import RicePaths
from tests.conftest import make_patient, write_cohort, write_volume
from tests.rice_assets.helpers import materialize
from tests.rice_assets.test_training import fake_registered_cohort

SETTLE = 30.0


def _settle(folder: Path, age: float = 120.0) -> None:
    """Make every file in the folder (and the folder) look unchanged for `age` seconds."""
    past = time.time() - age
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (past, past))


def _tick(paths: RicePaths, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    """One sensor evaluation, then what the daemon does with its result (partitions, observations)."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"rice_home": RiceHomeResource(home=str(paths.home), landing=str(paths.landing))},
    )
    result = landing_zone_sensor(context)
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys or []))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)
    return result


def _preprocessed(result: dg.SensorResult) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests or [] if r.partition_key)


def test_sensor_ticks_new_half_copied_invalid_unchanged_changed(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RICE_SETTLE_SECONDS", str(SETTLE))
    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    rows = [
        {"patient_id": "P1", "label": "rice", "dose_kind": "total"},
        {"patient_id": "P2", "label": "", "dose_kind": "total"},
        {"patient_id": "P3", "label": "recurrence", "dose_kind": "total"},
        {"patient_id": "P4", "label": "rice", "dose_kind": "total"},
    ]
    for pid in ("P1", "P2", "P3"):
        make_patient(paths.landing, pid)
    make_patient(paths.landing, "P4", channels=("mri_postop", "dose"))  # no mri_event: invalid
    write_cohort(paths.landing, rows)
    for pid in ("P1", "P2", "P4"):
        _settle(paths.landing / pid)  # P3 was just written: still being copied

    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(paths, instance, None)
        assert _preprocessed(first) == ["P1", "P2"], "new and settled; P3 half-copied, P4 invalid"
        assert any(r.asset_selection == [dg.AssetKey("cohort_manifest")] for r in first.run_requests)
        assert sorted(instance.get_dynamic_partitions(PATIENTS_PARTITION)) == ["P1", "P2"]
        assert instance.get_dynamic_partitions(UNLABELLED_PARTITION) == ["P2"]
        version_p1 = latest_version(instance, "P1")
        assert version_p1 is not None, "the input version is observed on landing_scans"

        unchanged = _tick(paths, instance, first.cursor)
        assert not unchanged.run_requests
        assert "still being copied: P3" in str(unchanged.skip_reason)
        assert "P4" not in str(unchanged.skip_reason), "an invalid folder is reported once"

        _settle(paths.landing / "P3")
        third = _tick(paths, instance, unchanged.cursor)
        assert _preprocessed(third) == ["P3"], "taken once it stopped changing"

        write_volume(paths.landing / "P4" / "mri_event.nii.gz", seed=9)  # the missing file arrives
        _settle(paths.landing / "P4")
        fourth = _tick(paths, instance, third.cursor)
        assert _preprocessed(fourth) == ["P4"], "an invalid folder is retried when it changes"

        write_volume(paths.landing / "P1" / "dose.nii.gz", seed=7)  # a corrected dose for a known patient
        _settle(paths.landing / "P1")
        changed = _tick(paths, instance, fourth.cursor)
        assert _preprocessed(changed) == ["P1"]
        (request,) = changed.run_requests
        assert request.asset_selection == [
            dg.AssetKey(k) for k in ("raw_scans", "dose_maps", "registered_volumes")
        ]
        assert latest_version(instance, "P1") not in (None, version_p1), "a new checksum, a new version"
        assert request.run_key == f"preprocess:P1:{latest_version(instance, 'P1')}"

        _settle(paths.landing / "P1", age=60)  # touched, same bytes: nothing to redo
        touched = _tick(paths, instance, changed.cursor)
        assert not touched.run_requests and touched.skip_reason


def test_sensor_reports_an_invalid_folder_once_with_its_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RICE_SETTLE_SECONDS", str(SETTLE))
    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    make_patient(paths.landing, "P9", channels=("mri_postop", "mri_event"))
    write_cohort(paths.landing, [{"patient_id": "P9", "label": "rice", "dose_kind": "total"}])
    _settle(paths.landing / "P9")
    with dg.DagsterInstance.ephemeral() as instance:
        first = _tick(paths, instance, None)
        assert not first.run_requests
        assert "patient P9 rejected" in str(first.skip_reason) and "missing dose" in str(first.skip_reason)
        again = _tick(paths, instance, first.cursor)
        assert "P9" not in str(again.skip_reason)
        assert json.loads(again.cursor)["P9"]["rejected"]


def _schedule(paths: RicePaths, instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    context = dg.build_schedule_context(
        instance=instance,
        resources={
            "rice_home": RiceHomeResource(home=str(paths.home), landing=str(paths.landing)),
            "catalog": CatalogResource(path=str(paths.catalog)),
        },
    )
    return retrain_when_cohort_changed(context)


def test_retraining_schedule_skips_when_nothing_changed_and_retrains_on_a_new_labelled_patient(
    rice_paths, resources, instance, monkeypatch
) -> None:
    monkeypatch.delenv("RICE_PROFILE", raising=False)
    fake_registered_cohort(rice_paths, n=12, n_test=2)
    first = _schedule(rice_paths, instance)
    assert isinstance(first, dg.RunRequest), "no experiment yet: train the first one"
    materialize(["cv_splits"], resources, instance)

    unchanged = _schedule(rice_paths, instance)
    assert isinstance(unchanged, dg.SkipReason)
    assert "no labelled patient added, removed or changed" in str(unchanged.skip_message)

    Catalog(rice_paths.catalog).upsert_patients(
        [PatientRecord("U05", label=None)]
    )  # unlabelled: no retraining
    assert isinstance(_schedule(rice_paths, instance), dg.SkipReason)

    fake_registered_cohort(rice_paths, n=1, n_test=0, first=40)  # T40 arrives, labelled and preprocessed
    request = _schedule(rice_paths, instance)
    assert isinstance(request, dg.RunRequest)
    assert request.tags["rice/changes"] == "added T40"


def test_landing_scans_is_an_observable_source_with_one_version_per_patient(tmp_path) -> None:
    from dagster._core.definitions.observe import observe

    from rice_assets.assets.landing import landing_scans

    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    make_patient(paths.landing, "P1")
    write_cohort(paths.landing, [{"patient_id": "P1", "label": "rice", "dose_kind": "total"}])
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(PATIENTS_PARTITION, ["P1"])
        result = observe(
            [landing_scans],
            instance=instance,
            resources={"rice_home": RiceHomeResource(home=str(paths.home), landing=str(paths.landing))},
        )
        assert result.success
        (event,) = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        assert event.asset_key == LANDING_SCANS and event.partition == "P1"
        assert latest_version(instance, "P1") is not None


@pytest.fixture(autouse=True)
def _no_profile(monkeypatch):
    monkeypatch.delenv("RICE_PROFILE", raising=False)


def test_retraining_job_submits_one_backfill_of_split_cells_evaluation_and_champion() -> None:
    from rice_assets.schedules import retrain_experiment

    with dg.DagsterInstance.ephemeral() as instance:
        result = retrain_experiment.execute_in_process(instance=instance, tags={"rice/changes": "added T40"})
        assert result.success
        (backfill,) = instance.get_backfills()
        assert backfill.title == "retraining: added T40"
        subset = backfill.asset_backfill_data.target_subset
        assert {k.to_user_string() for k in subset.non_partitioned_asset_keys} == {
            "cv_splits",
            "evaluation_tables",
            "champion_model",
        }
        cells = subset.get_partitions_subset(dg.AssetKey("fold_models"))
        assert len(cells) == 35
