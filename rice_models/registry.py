"""MLflow records beyond the fold runs: the champion ensemble (alias `champion`) and evaluation runs."""

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import mlflow
import numpy as np
from mlflow import MlflowClient

from rice_models.ensemble import FoldEnsemble
from rice_models.tracking import DEFAULT_EXPERIMENT, Tracking, experiment_id, log_registered_model

CHAMPION_MODEL = "rice-net-champion"
CHAMPION_ALIAS = "champion"


class RegisteredEnsemble(NamedTuple):
    """Where the champion went: its run, registered model name and version."""

    run_id: str
    registered_model: str
    model_version: int


def register_champion(
    ensemble: FoldEnsemble,
    *,
    combination: str,
    fold_versions: Mapping[str, str],
    input_example: np.ndarray,
    tags: Mapping[str, str],
    tracking: Tracking,
    registered_model: str = CHAMPION_MODEL,
) -> RegisteredEnsemble:
    """Log the fold ensemble as one model, register it, and point the `champion` alias at it.

    Args:
        ensemble: the champion combination's fold networks (returns P(RICE) for (B, C, D, H, W)).
        combination: the champion combination (a version tag).
        fold_versions: fold -> version of `rice-net` it holds (recorded as params and a version tag).
        input_example: a (1, C, D, H, W) input for the signature.
        tags: run tags (e.g. the Dagster run id).
        tracking: the MLflow backend.
        registered_model: registered model name.
    """
    with tracking.lock():
        client = MlflowClient(tracking_uri=tracking.tracking_uri, registry_uri=tracking.tracking_uri)
        exp = experiment_id(client, DEFAULT_EXPERIMENT, tracking.artifact_root)
        run_tags = {**tags, "role": "champion", "combination": combination}
        with mlflow.start_run(experiment_id=exp, run_name=f"champion {combination}", tags=run_tags) as run:
            mlflow.log_params(
                {"combination": combination, **{f"fold_{k}_version": v for k, v in fold_versions.items()}}
            )
            version = log_registered_model(ensemble, input_example, registered_model)
        client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, str(version))
        client.set_model_version_tag(registered_model, str(version), "combination", combination)
        versions = ",".join(f"{k}:{v}" for k, v in sorted(fold_versions.items()))
        client.set_model_version_tag(registered_model, str(version), "fold_versions", versions)
    return RegisteredEnsemble(run.info.run_id, registered_model, version)


def champion_uri(registered_model: str = CHAMPION_MODEL) -> str:
    """`models:/rice-net-champion@champion`."""
    return f"models:/{registered_model}@{CHAMPION_ALIAS}"


def log_evaluation_run(files: Mapping[str, Path], *, tags: Mapping[str, str], tracking: Tracking) -> str:
    """One MLflow run holding the evaluation's tables and plots as artifacts; returns its id."""
    with tracking.lock():
        client = MlflowClient(tracking_uri=tracking.tracking_uri, registry_uri=tracking.tracking_uri)
        exp = experiment_id(client, DEFAULT_EXPERIMENT, tracking.artifact_root)
        with mlflow.start_run(
            experiment_id=exp, run_name="evaluation", tags={**tags, "role": "evaluation"}
        ) as run:
            for path in files.values():
                mlflow.log_artifact(str(path), artifact_path="evaluation")
    return str(run.info.run_id)
