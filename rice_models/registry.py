"""MLflow records beyond the fold runs: the champion ensemble (alias `champion`) and evaluation runs.

Weights are stored once: each fold network is an MLflow PyTorch model registered as a version of
`rice-net` (`rice_models.tracking`); the champion, `rice-net-champion`, is a pyfunc model that refers to
those versions by URI and loads them from the registry (`ChampionEnsemble`), so
`mlflow.pyfunc.load_model("models:/rice-net-champion@champion")` in a fresh process (with
`MLFLOW_TRACKING_URI` pointing at the same backend) returns the ensemble probability.
"""

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
import mlflow.pyfunc
import monai
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

from rice_models.ensemble import FoldEnsemble
from rice_models.tracking import (
    DEFAULT_EXPERIMENT,
    MODEL_NAME,
    Tracking,
    experiment_id,
    load_model,
    registered_uri,
    registry_quiet,
    using,
)

CHAMPION_MODEL = "rice-net-champion"
CHAMPION_ALIAS = "champion"


class RegisteredEnsemble(NamedTuple):
    """Where the champion went: its run, registered model name and version."""

    run_id: str
    registered_model: str
    model_version: int


class ChampionEnsemble(PythonModel):
    """The champion as an MLflow pyfunc model that holds no weights, only references.

    It names the registered fold models (`models:/rice-net/<version>`, one per fold) and loads them
    from the registry when it is loaded, so each network's weights are stored once, in MLflow's artifact
    store. `predict` returns the ensemble P(RICE) of `FoldEnsemble` for a stacked (B, C, D, H, W)
    float32 input; `ensemble` is the loaded `FoldEnsemble` (an `nn.Module`, e.g. for occlusion maps).

    Args:
        combination: the champion combination key.
        fold_uris: registered model URI of each fold model, in fold order.
    """

    def __init__(self, combination: str, fold_uris: Sequence[str]) -> None:
        self.combination = combination
        self.fold_uris = tuple(fold_uris)
        self.ensemble: FoldEnsemble | None = None

    def load_context(self, context: Any) -> None:
        """Load the fold models from the registry the current tracking URI points at."""
        self.ensemble = FoldEnsemble([load_model(uri) for uri in self.fold_uris], self.combination)

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Ensemble P(RICE), shape (B,) float32, for a (B, C, D, H, W) float32 input.

        `np.ndarray` is a hint MLflow infers no schema from: the schema is the logged signature.
        """
        if self.ensemble is None:
            self.load_context(context)
        assert self.ensemble is not None
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            return self.ensemble(x).numpy()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the references only, never loaded weights."""
        return {"combination": self.combination, "fold_uris": self.fold_uris, "ensemble": None}


def register_champion(
    *,
    combination: str,
    fold_versions: Mapping[str, str],
    input_example: np.ndarray,
    tags: Mapping[str, str],
    tracking: Tracking,
    registered_model: str = CHAMPION_MODEL,
) -> RegisteredEnsemble:
    """Log the champion as one pyfunc model referring to its fold versions, register it, set the alias.

    Args:
        combination: the champion combination (a version tag).
        fold_versions: fold -> version of `rice-net` it holds (recorded as params and a version tag).
        input_example: a (1, C, D, H, W) input for the signature (only its shape is kept).
        tags: run tags (e.g. the Dagster run id).
        tracking: the MLflow backend.
        registered_model: registered model name.

    Raises:
        RuntimeError: MLflow did not register a version.
    """
    uris = [registered_uri(int(v)) for _, v in sorted(fold_versions.items(), key=lambda kv: int(kv[0]))]
    champion = ChampionEnsemble(combination, uris)
    with tracking.lock(), using(tracking):
        champion.load_context(None)
        example = np.asarray(input_example, dtype=np.float32)
        signature = infer_signature(example, champion.predict(None, example))
        client = tracking.client()
        exp = experiment_id(client, DEFAULT_EXPERIMENT, tracking.artifact_root)
        run_tags = {**tags, "role": "champion", "combination": combination}
        with mlflow.start_run(experiment_id=exp, run_name=f"champion {combination}", tags=run_tags) as run:
            mlflow.log_params(
                {"combination": combination, **{f"fold_{k}_version": v for k, v in fold_versions.items()}}
            )
            with registry_quiet(), warnings.catch_warnings():  # no input example: 224^3 in `paper`
                warnings.filterwarnings("ignore", message=".*An input example was not provided")
                info = mlflow.pyfunc.log_model(
                    name=MODEL_NAME,
                    python_model=champion,
                    signature=signature,
                    pip_requirements=[
                        f"torch=={torch.__version__.split('+')[0]}",
                        f"monai=={monai.__version__}",
                    ],
                    registered_model_name=registered_model,
                )
        if info.registered_model_version is None:
            raise RuntimeError(f"MLflow did not register a version of {registered_model!r}")
        version = str(info.registered_model_version)
        client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, version)
        client.set_model_version_tag(registered_model, version, "combination", combination)
        versions = ",".join(f"{k}:{v}" for k, v in sorted(fold_versions.items()))
        client.set_model_version_tag(registered_model, version, "fold_versions", versions)
    return RegisteredEnsemble(run.info.run_id, registered_model, int(version))


def load_champion(tracking: Tracking | None = None) -> tuple[FoldEnsemble, str]:
    """The champion's fold ensemble (an `nn.Module`, CPU, eval mode) and its registered version.

    Args:
        tracking: the backend; None = MLflow's current tracking URI.

    Raises:
        mlflow.exceptions.MlflowException: no model carries the `champion` alias.
    """
    with using(tracking):
        client = MlflowClient()
        version = client.get_model_version_by_alias(CHAMPION_MODEL, CHAMPION_ALIAS)
        model = mlflow.pyfunc.load_model(registered_uri(int(version.version), CHAMPION_MODEL))
    ensemble = model.unwrap_python_model().ensemble
    assert isinstance(ensemble, FoldEnsemble)
    return ensemble, str(version.version)


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
