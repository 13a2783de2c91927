"""When a landing-zone patient folder is complete, and what version of its inputs it holds.

A folder still being copied must not be taken half-written: a folder is *settled* when none of its files
changed for `settle_seconds`. Its *input version* is a checksum of every file (relative name and bytes)
plus the patient's cohort.csv row without `label` and `split` (those decide roles, not preprocessing): a
new checksum means the patient's preprocessing, and everything made from it, is out of date.

No Dagster here: the landing-zone sensor, the observable source asset `landing_scans` and `rice run` share
these functions.
"""

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

from rice_models.provenance import sha256_of

ROLE_COLUMNS = ("label", "split")
"""cohort.csv columns that are not inputs of preprocessing (a relabel re-trains, it does not re-process)."""


@dataclasses.dataclass(frozen=True)
class FolderState:
    """A patient folder as `stat` sees it: a cheap signature of its files and the newest change.

    Attributes:
        signature: hash of every file's relative name, size and mtime (ns); changes when any file does.
        newest_mtime: the latest modification time of the folder or any file in it (epoch seconds).
        n_files: how many files the folder holds (0 for a missing or empty folder).
    """

    signature: str
    newest_mtime: float
    n_files: int

    def settled(self, settle_seconds: float, now: float | None = None) -> bool:
        """True when nothing in the folder changed for `settle_seconds` (and it holds at least one file)."""
        now = time.time() if now is None else now
        return self.n_files > 0 and now - self.newest_mtime >= settle_seconds


def folder_state(patient_dir: Path) -> FolderState:
    """The stat signature of a patient folder (hidden files ignored); an empty state when it is missing."""
    if not patient_dir.is_dir():
        return FolderState("", 0.0, 0)
    digest = hashlib.sha256()
    newest = patient_dir.stat().st_mtime
    files = _files(patient_dir)
    for path in files:
        stat = path.stat()
        newest = max(newest, stat.st_mtime)
        digest.update(
            f"{path.relative_to(patient_dir).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
        )
    return FolderState(digest.hexdigest()[:16], newest, len(files))


def input_version(patient_dir: Path, row: Mapping[str, str]) -> str:
    """The version of a patient's inputs: checksums of its files and its cohort.csv row (less label, split).

    Args:
        patient_dir: the patient's landing-zone folder.
        row: its cohort.csv row (column -> text).

    Returns:
        16 hex digits; equal for byte-identical inputs wherever they lie.
    """
    files = _files(patient_dir)
    payload = {
        "files": {p.relative_to(patient_dir).as_posix(): sha256_of(p) for p in files},
        "row": {k: (v or "").strip() for k, v in sorted(row.items()) if k not in ROLE_COLUMNS and k},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _files(patient_dir: Path) -> list[Path]:
    """The folder's files, sorted, hidden ones (any dot-named part) left out."""
    return sorted(p for p in patient_dir.rglob("*") if p.is_file() and not _hidden(p, patient_dir))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
