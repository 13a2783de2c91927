import re
import shutil
from pathlib import Path

import pytest

from rice_models.landing import LandingError, validate_landing, write_manifest
from tests.conftest import make_patient, write_cohort

VALID = {"patient_id": "P1", "label": "rice", "split": "", "dose_kind": "total", "n_fractions": ""}


def test_valid_cohort_has_no_problems(tiny_landing) -> None:
    report = validate_landing(tiny_landing(3))
    assert report.ok, report.problems
    assert [p.patient_id for p in report.patients] == ["P1", "P2", "P3"]
    assert set(report.patients[0].inputs) == {"mri_postop", "mri_event", "dose"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"label": "necrosis"}, "unknown label 'necrosis'"),
        ({"patient_id": "P 1"}, "must match"),
        ({"patient_id": "x" * 65}, "must match"),
        ({"split": "train"}, "unknown split 'train'"),
        ({"split": "test", "label": ""}, "test-set patient needs a label"),
        ({"dose_kind": "boost"}, "dose_kind 'boost'"),
        ({"dose_kind": "fraction"}, "n_fractions is empty"),
        ({"dose_kind": "fraction", "n_fractions": "0"}, "positive integer"),
        ({"n_fractions": "thirty"}, "positive integer"),
        ({"prescription_gy": "-3"}, "prescription_gy"),
    ],
)
def test_each_bad_row_is_reported_with_its_patient_and_line(tmp_path: Path, row: dict, expected: str) -> None:
    landing = tmp_path / "landing"
    bad = {**VALID, **row}
    make_patient(landing, bad["patient_id"]) if " " not in bad["patient_id"] else None
    make_patient(landing, "OK1")
    write_cohort(landing, [bad, {**VALID, "patient_id": "OK1"}], extra=("prescription_gy",))
    report = validate_landing(landing)
    messages = [str(p) for p in report.problems]
    assert any(expected in m and "line 2" in m for m in messages), messages
    assert [p.patient_id for p in report.patients] == ["OK1"], "the valid patient goes on"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    make_patient(landing, "A", channels=("mri_postop", "dose"))
    make_patient(landing, "B")
    make_patient(landing, "STRAY")
    (landing / "B" / "dose.nii.gz").write_bytes(b"")
    rows = [
        {**VALID, "patient_id": "A"},
        {**VALID, "patient_id": "B", "label": "maybe"},
        {**VALID, "patient_id": "A"},
        {**VALID, "patient_id": "GONE"},
    ]
    write_cohort(landing, rows)
    problems = validate_landing(landing).problems
    text = "\n".join(str(p) for p in problems)
    assert "patient A" in text and "missing mri_event" in text
    assert "unknown label 'maybe'" in text and "dose file is empty" in text and "B/dose.nii.gz" in text
    assert "duplicate patient_id (first on line 2)" in text
    assert "patient GONE" in text and "patient folder is missing" in text
    assert "patient STRAY" in text and "no row in cohort.csv" in text
    assert len(problems) == 6


def test_duplicate_rejects_both_rows(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    make_patient(landing, "A")
    write_cohort(landing, [{**VALID, "patient_id": "A"}, {**VALID, "patient_id": "A"}])
    report = validate_landing(landing)
    assert report.patients == [] and report.rejected_ids() == ["A"]


def test_dicom_folder_and_dose_dcm_are_accepted(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    make_patient(landing, "D", channels=("mri_event",))
    (landing / "D" / "mri_postop").mkdir()
    (landing / "D" / "mri_postop" / "IM0001").write_bytes(b"DICM")
    (landing / "D" / "dose.dcm").write_bytes(b"DICM")
    write_cohort(landing, [{**VALID, "patient_id": "D"}])
    report = validate_landing(landing)
    assert report.ok, report.problems
    assert report.patients[0].inputs["mri_postop"].name == "mri_postop"
    assert report.patients[0].inputs["dose"].name == "dose.dcm"


def test_gz_that_is_not_gzip_is_refused(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    make_patient(landing, "G")
    (landing / "G" / "mri_event.nii.gz").write_bytes(b"not gzip at all")
    write_cohort(landing, [{**VALID, "patient_id": "G"}])
    (problem,) = validate_landing(landing).problems
    assert "not gzip-compressed" in str(problem) and "G/mri_event.nii.gz" in str(problem)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cohort.csv not found"),
        ("patient_id,label\nP1,rice\n", "missing required column(s) ['split', 'dose_kind', 'n_fractions']"),
    ],
)
def test_unusable_cohort_raises(tmp_path: Path, content: str | None, expected: str) -> None:
    tmp_path.joinpath("landing").mkdir()
    if content is not None:
        tmp_path.joinpath("landing", "cohort.csv").write_text(content)
    with pytest.raises(LandingError, match=re.escape(expected)):
        validate_landing(tmp_path / "landing")


def test_covariates_kept_and_manifest_written(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    make_patient(landing, "C")
    row = {**VALID, "patient_id": "C", "dose_kind": "fraction", "n_fractions": "30", "age": "61"}
    write_cohort(landing, [row], extra=("age", "prescription_gy"))
    report = validate_landing(landing)
    (entry,) = report.patients
    assert entry.n_fractions == 30 and entry.covariates["age"] == "61" and entry.prescription_gy is None
    manifest = write_manifest(tmp_path / "lake" / "manifest.json", report)
    assert '"patient_id": "C"' in manifest.read_text()
    shutil.rmtree(landing / "C")
    assert not validate_landing(landing).ok


def test_optional_planning_ct_and_missing_geometry_flag(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    for pid in ("CT", "EMPTYCT", "FILECT", "FLAG", "BADFLAG"):
        make_patient(landing, pid)
    (landing / "CT" / "planning_ct" / "sub").mkdir(parents=True)
    (landing / "CT" / "planning_ct" / "sub" / "IM1").write_bytes(b"x")  # files in sub-folders count
    (landing / "EMPTYCT" / "planning_ct").mkdir()
    (landing / "FILECT" / "planning_ct").write_text("x")
    rows = [{**VALID, "patient_id": pid} for pid in ("CT", "EMPTYCT", "FILECT")]
    rows += [
        {**VALID, "patient_id": "FLAG", "accept_missing_geometry": "yes"},
        {**VALID, "patient_id": "BADFLAG", "accept_missing_geometry": "maybe"},
    ]
    write_cohort(landing, rows, extra=("accept_missing_geometry",))
    report = validate_landing(landing)
    entries = {p.patient_id: p for p in report.patients}
    assert set(entries) == {"CT", "FLAG"}
    assert entries["CT"].inputs["planning_ct"] == landing / "CT" / "planning_ct"
    assert "planning_ct" not in entries["FLAG"].inputs
    assert entries["FLAG"].accept_missing_geometry and not entries["CT"].accept_missing_geometry
    problems = {p.patient_id: str(p) for p in report.problems}
    assert "planning_ct DICOM folder is empty" in problems["EMPTYCT"]
    assert "planning_ct must be a folder" in problems["FILECT"]
    assert "accept_missing_geometry 'maybe'" in problems["BADFLAG"]


def test_patient_entry_agrees_with_validate_landing_and_checks_only_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-patient assets call patient_entry: same verdict as validating the whole landing zone, but
    only the patient's own row and folder are examined (not quadratic in patients)."""
    from rice_models import landing as landing_module
    from rice_models.landing import PatientRejected, patient_entry

    landing = tmp_path / "landing"
    for pid in ("A", "B", "C", "D"):
        make_patient(landing, pid)
    (landing / "B" / "dose.nii.gz").write_bytes(b"")
    rows = [{**VALID, "patient_id": p} for p in ("A", "B", "C", "D", "C")]
    rows.append({**VALID, "patient_id": "E", "label": "maybe"})
    write_cohort(landing, rows)
    report = validate_landing(landing)
    assert [p.patient_id for p in report.patients] == ["A", "D"]
    for entry in report.patients:
        assert patient_entry(landing, entry.patient_id) == entry
    for pid, reason in [
        ("B", "dose file is empty"),
        ("C", "duplicate patient_id (first on line 4)"),
        ("E", "unknown label 'maybe'"),
        ("GONE", "no row in cohort.csv"),
    ]:
        with pytest.raises(PatientRejected, match=re.escape(reason)):
            patient_entry(landing, pid)

    looked_at: list[Path] = []
    original = landing_module.find_input
    monkeypatch.setattr(landing_module, "find_input", lambda d, ch: looked_at.append(d) or original(d, ch))
    patient_entry(landing, "D")
    assert set(looked_at) == {landing / "D"}

    write_cohort(landing, [{**VALID, "patient_id": "D", "label": "recurrence"}])  # rewritten: read again
    assert patient_entry(landing, "D").label == "recurrence"
