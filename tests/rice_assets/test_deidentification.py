"""DICOM inputs through raw_scans and dose_maps: nothing identifying reaches the catalog, the lake,
the logs or Dagster metadata."""

import gzip
import shutil

import pydicom
from pydicom.data import get_testdata_file

from tests.conftest import write_cohort, write_volume
from tests.rice_assets.helpers import materialize
from tests.rice_models.imaging.conftest import SENTINELS, write_mr_series

FRAME = "1.2.826.0.1.3680043.8.498.11"  # one frame of reference shared by the MR series and the dose


def _identified_rt_dose(path) -> None:
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    ds.DoseSummationType = "PLAN"  # pydicom's file is one beam's dose: a course dose is needed
    ds.FrameOfReferenceUID = FRAME
    for keyword, value in SENTINELS.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def test_dicom_identifiers_stay_out_of_every_output(tmp_path, rice_paths, resources, instance) -> None:
    patient = rice_paths.landing / "D1"
    write_mr_series(patient / "mri_postop", sentinels=SENTINELS, frame_of_reference=FRAME)
    write_volume(patient / "mri_event.nii.gz")
    _identified_rt_dose(patient / "dose.dcm")
    row = {"patient_id": "D1", "label": "rice", "dose_kind": "total", "prescription_gy": "60"}
    write_cohort(rice_paths.landing, [row], extra=("prescription_gy",))

    sources = b"".join(p.read_bytes() for p in patient.rglob("*.dcm"))
    assert all(value.encode() in sources for value in SENTINELS.values()), "the inputs carry identifiers"

    assert materialize(["cohort_manifest"], resources, instance).success
    result = materialize(["raw_scans", "dose_maps"], resources, instance, "D1")
    assert result.success

    shutil.copy(rice_paths.catalog, tmp_path / "catalog-copy.duckdb")
    outputs = [tmp_path / "catalog-copy.duckdb", *rice_paths.lake.rglob("*.*")]
    texts = [gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in outputs]
    records = instance.get_records_for_run(result.run_id).records
    texts.append(str([r.event_log_entry for r in records]).encode())
    for value in [*SENTINELS.values(), FRAME]:
        for text in texts:
            assert value.encode() not in text, value

    dose = materialize(["dose_maps"], resources, instance, "D1").asset_materializations_for_node("dose_maps")
    header = dose[0].metadata["source"].value["header"]
    assert header["DoseUnits"] == "RELATIVE" and "PatientName" not in header
