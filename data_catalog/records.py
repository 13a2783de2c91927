"""Typed records the catalog reads and writes, and the stable identifiers that key them.

Records check their values when built, so a bad value fails with a plain `ValueError` naming the
field rather than as a constraint error deep in a write. The SQL schema repeats the checks.
"""

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

from rice_models.labels import LABELS

Label = str
"""A label of `rice_models.labels.LABELS` (the one vocabulary; checked when a record is built)."""
Split = Literal["test", "dev"]
DoseKind = Literal["total", "fraction"]
Channel = Literal["mri_postop", "mri_event", "dose"]
ScanFormat = Literal["nifti", "dicom", "rtdose"]
NodeKind = Literal["artifact", "scan"]
Role = Literal["train", "val", "test"]

SPLITS: tuple[str, ...] = get_args(Split)
DOSE_KINDS: tuple[str, ...] = get_args(DoseKind)
CHANNELS: tuple[str, ...] = get_args(Channel)
SCAN_FORMATS: tuple[str, ...] = get_args(ScanFormat)
NODE_KINDS: tuple[str, ...] = get_args(NodeKind)
ROLES: tuple[str, ...] = get_args(Role)

_PATIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PROFILE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _choice(field_name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{field_name} must be one of {choices}, got {value!r}")


def check_patient_id(patient_id: str) -> str:
    """Return `patient_id` if it matches `[A-Za-z0-9_-]{1,64}`, else raise ValueError."""
    if not isinstance(patient_id, str) or not _PATIENT_ID.fullmatch(patient_id):
        raise ValueError(f"patient_id must match [A-Za-z0-9_-]{{1,64}}, got {patient_id!r}")
    return patient_id


def check_sha256(value: str | None, field_name: str = "sha256", *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"{field_name} must be 64 lowercase hex digits, got {value!r}")


def _check_key_part(field_name: str, value: str) -> None:
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"{field_name} must be a non-empty string without '/', got {value!r}")


def scan_id(patient_id: str, channel: str) -> str:
    """The stable id of a patient's source scan: `scan/<patient_id>/<channel>`."""
    check_patient_id(patient_id)
    _choice("channel", channel, CHANNELS)
    return f"scan/{patient_id}/{channel}"


def check_profile(profile: str | None) -> str | None:
    """Return `profile` if it is None or matches `[A-Za-z0-9_.-]{1,64}`, else raise ValueError."""
    if profile is not None and (not isinstance(profile, str) or not _PROFILE.fullmatch(profile)):
        raise ValueError(f"profile must match [A-Za-z0-9_.-]{{1,64}} or be None, got {profile!r}")
    return profile


def artifact_id(asset: str, partition_key: str, name: str, profile: str | None = None) -> str:
    """The stable id of an artifact: `<asset>/<partition_key>/<name>`, or `<asset>@<profile>/...` when
    the artifact belongs to a processing profile (so `quick` and `paper` outputs never share an id)."""
    _check_key_part("asset", asset)
    if asset == "scan" or "@" in asset:
        raise ValueError(f"asset may not be called 'scan' (reserved for scan ids) or hold '@', got {asset!r}")
    _check_key_part("partition_key", partition_key)
    if not isinstance(name, str) or not name:
        raise ValueError(f"artifact name must be a non-empty string, got {name!r}")
    scope = f"{asset}@{check_profile(profile)}" if profile is not None else asset
    return f"{scope}/{partition_key}/{name}"


def parse_artifact_id(value: str) -> tuple[str, str, str]:
    """Split an artifact id into (asset, partition_key, name); the asset part keeps its `@<profile>`."""
    parts = value.split("/", 2)
    if len(parts) != 3 or parts[0] == "scan":
        raise ValueError(f"not an artifact id: {value!r}")
    asset, _, profile = parts[0].partition("@")
    artifact_id(asset, parts[1], parts[2], profile or None)
    return parts[0], parts[1], parts[2]


class ParentRef(NamedTuple):
    """A lineage parent: an artifact id or a scan id, and which of the two it is."""

    id: str
    kind: NodeKind

    @classmethod
    def scan(cls, patient_id: str, channel: str) -> "ParentRef":
        return cls(scan_id(patient_id, channel), "scan")

    @classmethod
    def artifact(cls, asset: str, partition_key: str, name: str, profile: str | None = None) -> "ParentRef":
        return cls(artifact_id(asset, partition_key, name, profile), "artifact")


def _parents(values: Iterable[tuple[str, str]]) -> tuple[ParentRef, ...]:
    parents = []
    for parent_id, kind in values:
        _choice("parent kind", kind, NODE_KINDS)
        if not isinstance(parent_id, str) or not parent_id:
            raise ValueError(f"parent id must be a non-empty string, got {parent_id!r}")
        parents.append(ParentRef(parent_id, kind))  # type: ignore[arg-type]
    return tuple(dict.fromkeys(parents))


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


@dataclass(frozen=True)
class PatientRecord:
    """One cohort.csv row.

    `split` is 'test' (independent test set) or 'dev' (development set, cross-validated); None or ''
    is read as 'dev', as an empty cohort.csv cell means. `label` None or '' means unlabelled.
    `n_fractions` is required when `dose_kind` is 'fraction' (the dose file holds one fraction).
    `withdrawn` is when the patient left cohort.csv (None: active); only the catalog sets it.
    """

    patient_id: str
    label: Label | None = None
    split: Split = "dev"
    dose_kind: DoseKind = "total"
    n_fractions: int | None = None
    covariates: Mapping[str, Any] = field(default_factory=dict)
    withdrawn: datetime | None = None

    def __post_init__(self) -> None:
        check_patient_id(self.patient_id)
        if self.label == "":
            _set(self, "label", None)
        if self.label is not None:
            _choice("label", self.label, LABELS)
        if self.split in (None, ""):
            _set(self, "split", "dev")
        _choice("split", self.split, SPLITS)
        _choice("dose_kind", self.dose_kind, DOSE_KINDS)
        n = self.n_fractions
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"n_fractions must be a positive integer, got {n!r}")
        if self.dose_kind == "fraction" and self.n_fractions is None:
            raise ValueError(f"patient {self.patient_id}: dose_kind 'fraction' needs n_fractions")
        _set(self, "covariates", dict(self.covariates))


@dataclass(frozen=True)
class ScanRecord:
    """One source file (or DICOM series folder) of a patient's channel, with its geometry."""

    patient_id: str
    channel: Channel
    source_path: str
    sha256: str
    format: ScanFormat
    modality: str | None = None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    affine: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_patient_id(self.patient_id)
        _choice("channel", self.channel, CHANNELS)
        _choice("format", self.format, SCAN_FORMATS)
        check_sha256(self.sha256, required=True)
        _set(self, "source_path", os.fspath(self.source_path))
        if self.shape is not None:
            _set(self, "shape", tuple(int(n) for n in self.shape))
        if self.spacing is not None:
            _set(self, "spacing", tuple(float(s) for s in self.spacing))
        if self.affine is not None:
            _set(self, "affine", tuple(tuple(float(v) for v in row) for row in self.affine))

    @property
    def scan_id(self) -> str:
        return scan_id(self.patient_id, self.channel)


@dataclass(frozen=True)
class ArtifactRecord:
    """One output of an asset partition, as the asset records it.

    `parents` are the artifacts and scans it was computed from; plain `(id, kind)` tuples work.
    """

    name: str
    path: str | None = None
    sha256: str | None = None
    profile: str | None = None
    settings: Mapping[str, Any] | None = None
    code_version: str | None = None
    run_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    parents: tuple[ParentRef, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"artifact name must be a non-empty string, got {self.name!r}")
        if self.path is not None:
            _set(self, "path", os.fspath(self.path))
        check_sha256(self.sha256)
        check_profile(self.profile)
        _set(self, "metadata", dict(self.metadata))
        if self.settings is not None:
            _set(self, "settings", dict(self.settings))
        _set(self, "parents", _parents(self.parents))


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact as the catalog holds it."""

    artifact_id: str
    asset: str
    partition_key: str
    name: str
    path: str | None
    sha256: str | None
    profile: str | None
    settings: Mapping[str, Any] | None
    code_version: str | None
    run_id: str | None
    metadata: Mapping[str, Any]
    parents: tuple[ParentRef, ...]
    created: datetime


@dataclass(frozen=True)
class LineageNode:
    """One ancestor or descendant found by a lineage walk.

    `depth` is the shortest number of lineage edges from the start node. `path` and `sha256` are the
    artifact's file, or for a scan its `source_path` and checksum. `known` is False when a lineage edge
    names an id that is no longer recorded (its partition was re-materialised without it).
    """

    id: str
    kind: NodeKind
    depth: int
    path: str | None
    sha256: str | None
    asset: str | None = None
    partition_key: str | None = None
    name: str | None = None
    patient_id: str | None = None
    channel: str | None = None
    known: bool = True

    @property
    def source_path(self) -> str | None:
        """The scan's landing-zone path (None for artifacts)."""
        return self.path if self.kind == "scan" else None


@dataclass(frozen=True)
class SplitRecord:
    """One patient's role in one fold ('train'/'val'), or in the test set ('test', fold None)."""

    patient_id: str
    role: Role
    fold: int | None = None
    seed: int | None = None
    n_folds: int | None = None

    def __post_init__(self) -> None:
        check_patient_id(self.patient_id)
        _choice("role", self.role, ROLES)
        if (self.role == "test") != (self.fold is None):
            raise ValueError(f"{self.patient_id}: role 'test' has no fold, 'train'/'val' need one")
        if self.fold is not None and self.fold < 0:
            raise ValueError(f"fold must be >= 0, got {self.fold}")


@dataclass(frozen=True)
class SplitMemory:
    """What a profile's earlier splits fixed since its last reset (`Catalog.split_memory`).

    `test`: every patient once in the test set; `development`: every patient once in a fold's training
    or validation set; `test_generated`: whether the test set was drawn (no cohort.csv row said `test`),
    None when no experiment was declared since the reset; `reset_at`: the last reset, if any.
    """

    test: frozenset[str] = frozenset()
    development: frozenset[str] = frozenset()
    test_generated: bool | None = None
    reset_at: datetime | None = None


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment `cv_splits` declared: its version and everything the version is a hash of.

    Args:
        experiment_version: the hash (`rice_models.experiment.experiment_version`).
        profile: the processing profile.
        settings: the profile's resolved settings, training overrides included.
        code_version: the training code version.
        data_versions: patient -> data version of its registered volumes.
        test_generated: the test set was drawn rather than marked in cohort.csv.
        n_test: test patients.
        n_development: development patients.
        excluded: patient -> why it is not in the experiment (QC, withdrawn, unlabelled test...).
        artifact_id: the cv_splits artifact that declared it.
    """

    experiment_version: str
    profile: str
    settings: Mapping[str, Any]
    code_version: str
    data_versions: Mapping[str, str]
    test_generated: bool
    n_test: int
    n_development: int
    excluded: Mapping[str, str] = field(default_factory=dict)
    artifact_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.experiment_version, str) or not self.experiment_version:
            raise ValueError(
                f"experiment_version must be a non-empty string, got {self.experiment_version!r}"
            )
        if check_profile(self.profile) is None:
            raise ValueError("an experiment belongs to a profile")
        _set(self, "settings", dict(self.settings))
        _set(self, "data_versions", dict(self.data_versions))
        _set(self, "excluded", dict(self.excluded))
