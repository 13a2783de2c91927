"""PHI scan: a DICOM cohort with planted identifiers, ingested with pseudonyms on, leaves none of them
anywhere under RICE_HOME (catalog text columns by SQL, lake NIfTI headers, PNG text, MLflow and
Dagster's SQLite stores, every other file's bytes); with pseudonyms off, a folder named after the
patient's DICOM PatientID is refused at validation, by name (README "Faults tried and survived")."""

import gzip
import sqlite3
import struct
import zlib
from pathlib import Path

import dagster as dg
import duckdb
import nibabel as nib
import pydicom
from pydicom.data import get_testdata_file

from rice_assets.resources import rice_resources
from rice_models.landing import validate_landing
from rice_models.paths import RicePaths
from rice_models.pseudonyms import KEY_ENV, display_id
from tests.conftest import write_cohort, write_volume
from tests.rice_assets.helpers import materialize
from tests.rice_models.imaging.conftest import SENTINELS, write_mr_series

FRAME = "1.2.826.0.1.3680043.8.498.11"
PLANTED = {**SENTINELS, "AccessionNumber": "SENTINELACC-7713"}
FOLDER = PLANTED["PatientID"]  # the folder is named after the hospital id, as happens in practice


def _identified_patient(landing: Path, folder: str) -> None:
    patient = landing / folder
    write_mr_series(patient / "mri_postop", sentinels=PLANTED, frame_of_reference=FRAME)
    write_volume(patient / "mri_event.nii.gz")
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    ds.DoseSummationType = "PLAN"
    ds.FrameOfReferenceUID = FRAME
    for keyword, value in PLANTED.items():
        setattr(ds, keyword, value)
    ds.save_as(patient / "dose.dcm")


def _png_text(data: bytes) -> bytes:
    """The tEXt/zTXt/iTXt chunks of a PNG, decompressed."""
    out, i = b"", 8
    while i + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[i : i + 4]), data[i + 4 : i + 8]
        body = data[i + 8 : i + 8 + length]
        if kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out += key + zlib.decompress(rest[1:])
        elif kind in (b"tEXt", b"iTXt"):
            out += body
        i += 12 + length
    return out


def _texts(home: Path, tmp: Path) -> dict[str, bytes]:
    """Every piece of text under RICE_HOME, by where it came from."""
    texts: dict[str, bytes] = {}
    for path in (p for p in home.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        texts[str(path)] = gzip.decompress(raw) if path.suffix == ".gz" else raw
        if path.name.endswith((".nii", ".nii.gz")):
            header = nib.load(path).header
            texts[f"{path} header"] = b"".join(
                bytes(header[field].tobytes()) for field in ("descrip", "aux_file", "intent_name", "db_name")
            )
        if path.suffix == ".png":
            texts[f"{path} png text"] = _png_text(raw)
        if raw.startswith(b"SQLite format 3"):
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows = con.execute(f'SELECT * FROM "{table}"').fetchall()
                texts[f"{path} {table}"] = repr(rows).encode()
            con.close()
    copy = tmp / "catalog-copy.duckdb"  # SQL over a copy: the scan takes no lock on the real one
    copy.write_bytes((home / "catalog.duckdb").read_bytes())
    con = duckdb.connect(str(copy), read_only=True)
    columns = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE data_type IN ('VARCHAR', 'JSON') OR data_type LIKE '%[]'"
    ).fetchall()
    for table, column in columns:
        values = con.execute(f'SELECT CAST("{column}" AS VARCHAR) FROM "{table}"').fetchall()
        texts[f"catalog {table}.{column}"] = repr(values).encode()
    con.close()
    return texts


def test_no_planted_identifier_anywhere_under_rice_home(tmp_path, monkeypatch) -> None:
    landing, home, keys = tmp_path / "hospital-share", tmp_path / "home", tmp_path / "keys"
    _identified_patient(landing, FOLDER)
    write_cohort(
        landing,
        [{"patient_id": FOLDER, "label": "rice", "dose_kind": "total", "prescription_gy": "60"}],
        ("prescription_gy",),
    )
    monkeypatch.setenv("RICE_HOME", str(home))
    monkeypatch.setenv("RICE_LANDING", str(landing))
    monkeypatch.setenv(KEY_ENV, str(keys / "rice.key"))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    (home / "dagster").mkdir(parents=True)
    paths = RicePaths.from_env()
    assert paths.landing == keys / "landing", "the pipeline reads the pseudonymised view"

    with dg.DagsterInstance.get() as instance:
        resources = rice_resources(paths)
        assert materialize(["cohort_manifest"], resources, instance).success
        (pid,) = instance.get_dynamic_partitions("patients")
        assert pid.startswith("p") and display_id(pid) == FOLDER
        assert materialize(["raw_scans", "dose_maps"], resources, instance, pid).success

    texts = _texts(home, tmp_path)
    assert any("raw_scans" in where for where in texts) and any(
        "event_logs" in w or "runs" in w for w in texts
    )
    planted = {*PLANTED.values(), FRAME, FOLDER.lower()}
    leaks = [
        (value, where)
        for value in planted
        for where, text in texts.items()
        if value.lower().encode() in text.lower()
    ]
    assert leaks == []
    assert not (keys / "rice.key").stat().st_mode & 0o077, "the key is owner-only"


def test_folder_named_after_its_dicom_patient_id_is_refused_without_pseudonyms(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    _identified_patient(tmp_path, FOLDER)
    _identified_patient(tmp_path, "STUDY-001")
    rows = [
        {"patient_id": p, "label": "rice", "dose_kind": "total", "prescription_gy": "60"}
        for p in (FOLDER, "STUDY-001")
    ]
    write_cohort(tmp_path, rows, ("prescription_gy",))
    report = validate_landing(tmp_path)
    assert [p.patient_id for p in report.patients] == ["STUDY-001"]
    problems = [p for p in report.problems if p.patient_id == FOLDER]
    assert problems, report.problems  # one per DICOM input carrying the id (the MR series, the RT Dose)
    for problem in problems:
        assert "PatientID" in problem.message and "Rename" in problem.message and KEY_ENV in problem.message
