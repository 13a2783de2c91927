"""Shared fixtures: a tiny hand-made landing zone that follows the contract."""

import csv
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rice_models.landing import REQUIRED_COLUMNS


def write_volume(path: Path, seed: int = 0, shape: tuple[int, int, int] = (8, 8, 8)) -> Path:
    """A small seeded NIfTI volume."""
    data = np.random.default_rng(seed).random(shape, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def write_cohort(landing: Path, rows: list[dict[str, str]], extra: tuple[str, ...] = ()) -> Path:
    """Write cohort.csv with the contract's columns (plus `extra`) and the given rows."""
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / "cohort.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*REQUIRED_COLUMNS, *extra])
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in writer.fieldnames})
    return path


def make_patient(
    landing: Path, pid: str, channels: tuple[str, ...] = ("mri_postop", "mri_event", "dose")
) -> None:
    for index, channel in enumerate(channels):
        write_volume(landing / pid / f"{channel}.nii.gz", seed=index)


@pytest.fixture
def tiny_landing(tmp_path: Path) -> Callable[..., Path]:
    """Build a landing zone of valid patients `P1..Pn` (label alternating, `total` dose)."""

    def build(n: int = 3) -> Path:
        landing = tmp_path / "landing"
        rows = []
        for i in range(1, n + 1):
            make_patient(landing, f"P{i}")
            rows.append({"patient_id": f"P{i}", "label": ("rice", "recurrence")[i % 2], "dose_kind": "total"})
        write_cohort(landing, rows)
        return landing

    return build
