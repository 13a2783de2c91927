"""Identifiers that make an artifact traceable: content checksums and the code version."""

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a folder (e.g. a DICOM series): its files' relative names and bytes."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """The installed package version, plus the git commit when run from a checkout (`0.1.0+g1a2b3c4`)."""
    try:
        version = metadata.version("rice")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}" if commit else version


TRAINING_MODULES: tuple[str, ...] = ("channels", "data", "labels", "network", "profiles", "training")
"""The modules whose source decides what a fold model is (`training_code_version`)."""
SPLIT_MODULES: tuple[str, ...] = ("experiment", "labels", "qc", "splits")
"""The modules whose source decides a split and its experiment (the `code_version` of `cv_splits`)."""


@functools.cache
def source_version(modules: tuple[str, ...]) -> str:
    """A short hash of the source of some `rice_models` modules (committed or not).

    Args:
        modules: module names inside `rice_models`, e.g. `("training", "data")`.

    Raises:
        FileNotFoundError: a module that does not exist.
    """
    digest = hashlib.sha256()
    for name in modules:
        source = Path(__file__).with_name(f"{name}.py")
        digest.update(name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def training_code_version() -> str:
    """The source version of the modules that define a fold model (`TRAINING_MODULES`).

    It changes when the network, the data path, the training loop, the labels or the profiles change,
    committed or not, and not when unrelated code (a report, the README) does; it is the Dagster
    `code_version` of `fold_models` and part of every experiment version.
    """
    return source_version(TRAINING_MODULES)
