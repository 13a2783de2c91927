"""What the catalog and the lake say about a profile's experiment: the declared one (cv_splits), the
trained cells and whether they are current, the preprocessing behind each patient.

Glue between the catalog and `rice_models.experiment` / `rice_models.qc`, shared by the training and
evaluation assets and the `experiment_is_complete` check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from data_catalog import Catalog, StoredArtifact, artifact_id
from rice_models.experiment import CellCheck, CellVersion, check_cells, data_version
from rice_models.paths import RicePaths
from rice_models.profiles import get_profile
from rice_models.qc import Preprocessed
from rice_models.splits import Splits

if TYPE_CHECKING:
    from rice_models.evaluation import Cell  # torch: imported by the steps that evaluate

SPLITS_FILE = "splits.json"
UPSTREAM_ASSETS = ("raw_scans", "dose_maps")


def current_profile_name() -> str:
    """The profile `$RICE_PROFILE` selects (else `quick`): what `rice run` and default run config use."""
    return get_profile().name


def splits_path(paths: RicePaths, profile: str) -> Path:
    """`lake/cv_splits/<profile>/__all__/splits.json`: the split and the experiment cv_splits declared."""
    return paths.lake_dir("cv_splits", "__all__", profile) / SPLITS_FILE


def read_experiment(paths: RicePaths, profile: str) -> dict[str, Any]:
    """The experiment `cv_splits` declared last for the profile (its `splits.json`).

    Raises:
        dagster.Failure: cv_splits has not run for this profile.
    """
    path = splits_path(paths, profile)
    if not path.is_file():
        raise dg.Failure(f"no split for profile {profile!r} ({path}): materialise cv_splits first")
    return dict(json.loads(path.read_text()))


_SPLIT_FIELDS = ("test", "folds", "unlabelled", "labels", "test_generated", "seed", "test_fraction", "notes")


def splits_of(document: dict[str, Any]) -> Splits:
    """The `Splits` inside an experiment document (`read_experiment`)."""
    return Splits.from_dict({k: document[k] for k in _SPLIT_FIELDS})


def read_splits(paths: RicePaths, profile: str | None = None) -> Splits:
    """The split `cv_splits` wrote for the profile (default: the current one)."""
    return splits_of(read_experiment(paths, profile or current_profile_name()))


def preprocessing_records(store: Catalog, profile: str, patient_ids: Sequence[str]) -> list[Preprocessed]:
    """Each patient's latest preprocessing for the profile, as the catalog recorded it."""
    volumes = store.artifacts_by_partition("registered_volumes", profile=profile)
    upstream: dict[str, dict[str, datetime]] = {}
    for asset in UPSTREAM_ASSETS:
        for pid, group in store.artifacts_by_partition(asset, profile=None).items():
            upstream.setdefault(pid, {})[asset] = max(a.created for a in group)
    records = []
    for pid in patient_ids:
        group = volumes.get(pid, [])
        qc = next((a.metadata for a in group if a.name == "dose"), None) if group else None
        created = min((a.created for a in group), default=None)
        records.append(Preprocessed(pid, qc, created, upstream.get(pid, {})))
    return records


def data_versions(store: Catalog, profile: str, patient_ids: Sequence[str]) -> dict[str, str]:
    """Patient -> the data version of its registered volumes for the profile (checksums of its files)."""
    volumes = store.artifacts_by_partition("registered_volumes", profile=profile)
    return {pid: data_version({a.name: a.sha256 for a in volumes[pid]}) for pid in patient_ids}


def trained_cells(store: Catalog, profile: str) -> list[Cell]:
    """The fold models recorded for a profile, with their validation predictions and experiment version.

    Raises:
        dagster.Failure: a cell recorded without a registered model URI (an older version of rice).
    """
    from rice_models.evaluation import cell_from_summary

    cells = []
    for artifact in store.artifacts("fold_models", profile=profile):
        combination, fold = artifact.partition_key.split("|")
        uri = artifact.metadata.get("model_uri")
        if uri is None:
            raise dg.Failure(
                f"fold model {artifact.partition_key} has no registered model URI (trained by an older "
                "version of rice): re-materialise fold_models"
            )
        cells.append(cell_from_summary(combination, int(fold), uri, artifact.metadata))
    return cells


def cell_check(store: Catalog, paths: RicePaths, profile: str) -> tuple[CellCheck, list[Cell]]:
    """Whether the profile's trained cells form a complete, current experiment, and the usable cells
    (those of the compared combinations).

    Raises:
        dagster.Failure: cv_splits has not run for this profile.
    """
    declared = read_experiment(paths, profile)
    n_folds = len(declared["folds"])
    cells = trained_cells(store, profile)
    versions = [CellVersion(c.combination, c.fold, c.experiment_version) for c in cells]
    check = check_cells(str(declared["experiment_version"]), n_folds, versions)
    usable = [c for c in cells if c.combination in check.compared and c.experiment_version == check.current]
    return check, usable


def evaluation_record(store: Catalog, profile: str) -> StoredArtifact | None:
    """The catalog record of the profile's latest evaluation (its ablation table)."""
    return store.get_artifact(artifact_id("evaluation_tables", "__all__", "ablation", profile))
