import pytest

from data_catalog import CHANNELS, Catalog, PatientRecord, ScanRecord, scan_id
from tests.data_catalog.conftest import scan, sha


def test_upsert_inserts_then_updates(catalog: Catalog) -> None:
    catalog.upsert_patients([PatientRecord("P1", "rice", covariates={"age": 61}), PatientRecord("P2")])
    (before,) = catalog.query("SELECT updated FROM patients WHERE patient_id = 'P1'")
    catalog.upsert_patients(
        [PatientRecord("P1", "recurrence", "test", "fraction", 30, {"age": 62, "site": "B"})]
    )
    assert catalog.patient_ids() == ["P1", "P2"]
    assert catalog.get_patient("P1") == PatientRecord(
        "P1", "recurrence", "test", "fraction", 30, {"age": 62, "site": "B"}
    )
    assert catalog.get_patient("P2") == PatientRecord("P2")
    (after,) = catalog.query("SELECT updated FROM patients WHERE patient_id = 'P1'")
    assert after["updated"] > before["updated"]
    assert catalog.get_patient("nobody") is None


def test_prune_removes_unlisted_patients_and_their_scans(cohort: Catalog) -> None:
    cohort.upsert_patients([PatientRecord("P1", "rice"), PatientRecord("P3", None, "test")], prune=True)
    assert cohort.patient_ids() == ["P1", "P3"]
    assert cohort.get_scans("P2") == []
    assert len(cohort.get_scans("P1")) == 3


def test_duplicate_patients_in_one_call_are_refused(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="more than once"):
        catalog.upsert_patients([PatientRecord("P1"), PatientRecord("P1", "rice")])
    assert catalog.patient_ids() == []


def test_patients_in_split(cohort: Catalog) -> None:
    assert cohort.patients_in_split("dev") == ["P1", "P2"]
    assert cohort.patients_in_split("test") == ["P3"]
    assert cohort.patients_in_split("test", labelled=True) == []
    assert cohort.patients_in_split("test", labelled=False) == ["P3"]
    with pytest.raises(ValueError, match="split"):
        cohort.patients_in_split("train")  # type: ignore[arg-type]


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_split_and_label_read_as_development_and_unlabelled(empty: None | str) -> None:
    record = PatientRecord("P1", empty, empty)  # type: ignore[arg-type]
    assert (record.label, record.split) == (None, "dev")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patient_id": "P 1"}, "patient_id"),
        ({"patient_id": "x" * 65}, "patient_id"),
        ({"label": "tumour"}, "label"),
        ({"split": "val"}, "split"),
        ({"dose_kind": "weekly"}, "dose_kind"),
        ({"dose_kind": "fraction"}, "n_fractions"),
        ({"n_fractions": 0}, "n_fractions"),
        ({"n_fractions": True}, "n_fractions"),
    ],
)
def test_bad_patient_records_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PatientRecord(**{"patient_id": "P1", **kwargs})


def test_record_scans_round_trips_and_replaces(cohort: Catalog) -> None:
    assert cohort.get_scans("P1") == sorted((scan("P1", ch) for ch in CHANNELS), key=lambda s: s.channel)
    assert cohort.get_scans("P1")[0].scan_id == "scan/P1/dose" == scan_id("P1", "dose")
    renewed = ScanRecord("P1", "mri_postop", "/landing/P1/mri_postop", sha("dicom series"), "dicom", "MR")
    cohort.record_scans("P1", [renewed])
    assert cohort.get_scans("P1") == [renewed]
    assert len(cohort.get_scans("P2")) == 3


def test_record_scans_refuses_bad_input(cohort: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown patient"):
        cohort.record_scans("P9", [scan("P9", "dose")])
    with pytest.raises(ValueError, match="other patients"):
        cohort.record_scans("P1", [scan("P2", "dose")])
    with pytest.raises(ValueError, match="more than once"):
        cohort.record_scans("P1", [scan("P1", "dose"), scan("P1", "dose")])
    assert len(cohort.get_scans("P1")) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"channel": "t2"}, "channel"), ({"format": "mha"}, "format"), ({"sha256": "abc"}, "sha256")],
)
def test_bad_scan_records_are_refused(kwargs: dict, message: str) -> None:
    base = {"patient_id": "P1", "channel": "dose", "source_path": "/x", "sha256": sha("x"), "format": "nifti"}
    with pytest.raises(ValueError, match=message):
        ScanRecord(**{**base, **kwargs})
