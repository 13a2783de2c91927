"""`verified_inputs`: every consumer's upstream files, checked against the catalog before use."""

from pathlib import Path

import pytest

from data_catalog import ArtifactRecord, Catalog
from rice_assets.lineage import verified_inputs
from rice_models.provenance import sha256_of
from rice_models.sources import InputError

CHANNELS = ("mri_postop", "dose")


def _record(catalog: Catalog, lake: Path, patient: str) -> None:
    records = []
    for channel in CHANNELS:
        path = lake / patient / f"{channel}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{patient}/{channel}".encode())
        records.append(ArtifactRecord(channel, str(path), sha256_of(path), profile="quick"))
    catalog.record_artifacts("registered_volumes", patient, records, check_parents=False)


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Catalog, Path]:
    catalog = Catalog(tmp_path / "catalog.duckdb")
    for patient in ("P1", "P2", "P3"):
        _record(catalog, tmp_path / "lake", patient)
    return catalog, tmp_path / "lake"


def test_recorded_unchanged_files_are_returned(recorded: tuple[Catalog, Path]) -> None:
    catalog, _ = recorded
    found = verified_inputs(catalog, "registered_volumes", ["P3", "P1"], "quick")
    assert [(a.partition_key, a.name) for a in found] == [
        ("P3", "dose"), ("P3", "mri_postop"), ("P1", "dose"), ("P1", "mri_postop")]  # fmt: skip
    only = verified_inputs(catalog, "registered_volumes", ["P2"], "quick", names=["dose"])
    assert [a.name for a in only] == ["dose"]


@pytest.mark.parametrize("damage", ["changed", "missing", "unrecorded", "other profile"])
def test_a_damaged_or_unrecorded_input_is_refused_naming_the_patient(
    recorded: tuple[Catalog, Path], damage: str
) -> None:
    catalog, lake = recorded
    profile = "quick"
    if damage == "changed":
        (lake / "P2" / "dose.nii.gz").write_bytes(b"edited by hand")
    elif damage == "missing":
        (lake / "P2" / "dose.nii.gz").unlink()
    elif damage == "unrecorded":
        catalog.record_artifacts("registered_volumes", "P2", [], profile="quick")
    else:
        profile = "paper"
    with pytest.raises(InputError) as refused:
        verified_inputs(catalog, "registered_volumes", ["P1", "P2"], profile)
    assert refused.value.patient_id == ("P1" if damage == "other profile" else "P2")
    assert "materialise registered_volumes" in str(refused.value)


def test_a_partition_missing_a_named_output_is_refused(recorded: tuple[Catalog, Path]) -> None:
    catalog, _ = recorded
    with pytest.raises(InputError, match="no complete recorded registered_volumes output"):
        verified_inputs(catalog, "registered_volumes", ["P1"], "quick", names=["dose", "mri_event"])
