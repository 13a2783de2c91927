"""End-to-end: the three preprocessing assets for one synthetic patient, then its lineage."""

from pathlib import Path

import dagster as dg
import nibabel as nib
import numpy as np
import pytest

from data_catalog import Catalog
from rice_assets.constants import PATIENTS_PARTITION
from rice_models.provenance import sha256_of
from rice_models.synth import generate_cohort
from tests.rice_assets.helpers import materialize

PREPROCESSING = ["raw_scans", "dose_maps", "registered_volumes"]


@pytest.fixture
def synthetic_home(rice_paths, resources, instance):
    generate_cohort(rice_paths.landing, n_patients=2, seed=3, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    result = materialize(["cohort_manifest"], resources, instance)
    assert result.success
    return rice_paths


def _preprocess(pid: str, resources, instance) -> dg.ExecuteInProcessResult:
    return materialize(PREPROCESSING, resources, instance, pid, raise_on_error=False)


@pytest.mark.slow
def test_preprocessing_assets_and_lineage(synthetic_home, resources, instance) -> None:
    pid = sorted(instance.get_dynamic_partitions(PATIENTS_PARTITION))[0]
    result = _preprocess(pid, resources, instance)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {
        "source_geometry",
        "dose_plausible",
        "registration_similarity",
        "brain_mask_volume",
        "finite_values",
        "dose_coverage",
    }
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}

    folder = synthetic_home.lake_dir("registered_volumes", pid, "quick")
    images = {n: nib.load(folder / f"{n}.nii.gz") for n in ("mri_postop", "mri_event", "dose", "brain_mask")}
    affines = [img.affine for img in images.values()]
    assert all(np.allclose(a, affines[0]) for a in affines)
    assert all(img.shape == (32, 32, 32) for img in images.values())
    assert images["dose"].get_fdata().max() > 30, "dose stays in Gy"

    catalog = Catalog(synthetic_home.catalog)
    ancestors = catalog.ancestors(f"registered_volumes@quick/{pid}/dose")
    scans = {n.channel: n for n in ancestors if n.kind == "scan"}
    assert set(scans) == {"dose", "mri_postop"}
    dose_source = synthetic_home.landing / pid / "dose.nii.gz"
    assert scans["dose"].source_path == f"{pid}/dose.nii.gz", "relative to the landing zone"
    assert scans["dose"].sha256 == sha256_of(dose_source)
    artifact = catalog.get_artifact(f"registered_volumes@quick/{pid}/mri_event")
    assert artifact.profile == "quick" and artifact.settings["shape"] == [32, 32, 32]
    assert artifact.metadata["mask_method"] in {"hd-bet", "ants-template", "otsu"}


@pytest.mark.slow
def test_bad_dose_file_fails_that_patient_only(synthetic_home, resources, instance) -> None:
    bad, good = sorted(instance.get_dynamic_partitions(PATIENTS_PARTITION))
    dose = synthetic_home.landing / bad / "dose.nii.gz"
    dose.write_bytes(dose.read_bytes()[:200])  # truncated gzip: still passes the cheap validator
    failed = _preprocess(bad, resources, instance)
    assert not failed.success
    message = str(failed.all_events)
    assert bad in message and "dose.nii.gz" in message
    assert not Path(synthetic_home.lake_dir("dose_maps", bad) / "dose.nii.gz").exists()
    assert _preprocess(good, resources, instance).success
