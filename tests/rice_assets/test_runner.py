"""`rice run` end to end on a tiny synthetic cohort, one patient broken."""

import pytest

from rice_assets.runner import run_pipeline
from rice_assets.stages import STAGES
from rice_models.synth import generate_cohort


@pytest.mark.slow
def test_run_pipeline_reports_the_broken_patient_and_finishes_the_others(rice_paths, instance):
    generate_cohort(rice_paths.landing, n_patients=3, seed=4, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    broken = rice_paths.landing / "SYN-0002" / "mri_event.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    lines: list[str] = []
    summary = run_pipeline(rice_paths, instance, stages=STAGES[:2], echo=lines.append)
    assert list(summary.failures) == ["preprocessing [2/3] SYN-0002"]
    assert "SYN-0002" in summary.failures["preprocessing [2/3] SYN-0002"]
    assert "mri_event.nii.gz" in summary.failures["preprocessing [2/3] SYN-0002"]
    for pid in ("SYN-0001", "SYN-0003"):
        assert (rice_paths.lake_dir("registered_volumes", pid, "quick") / "dose.nii.gz").is_file()
    assert not rice_paths.lake_dir("registered_volumes", "SYN-0002", "quick").exists()
    assert any(line.startswith("  ok    cohort") for line in lines)
