"""MLflow records beyond the fold runs: the champion ensemble (alias `champion`) and evaluation runs.

Weights are stored once: each fold network is an MLflow PyTorch model registered as a version of
`rice-net-<profile>` (`rice_models.tracking`); the champion, `rice-net-champion-<profile>`, is a pyfunc
model that refers to those versions by URI and loads them from the registry (`ChampionEnsemble`), so
`mlflow.pyfunc.load_model("models:/rice-net-champion-quick@champion")` in a fresh process (with
`MLFLOW_TRACKING_URI` pointing at the same backend) returns the ensemble probability. The champion
carries the decision rule the evaluation used and the experiment version it belongs to (version tags
`voting`, `threshold`, `rice.experiment_version`), so what is served is what was evaluated.

Crash safety: `register_champion` creates the version with its tags (among them the Dagster run id)
but does not move the alias; the caller records the version in the catalog, then `promote_champion`
moves the alias and marks the version committed, the last write of the step. A re-run first calls
`reconcile_champion`, which deletes uncommitted versions the catalog does not record and points the
alias back at the catalog's champion, so the alias never disagrees with the catalog for long.
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

from rice_models.ensemble import DecisionRule, FoldEnsemble
from rice_models.experiment import EXPERIMENT_TAG
from rice_models.tracking import (
    COMMITTED_TAG,
    DEFAULT_EXPERIMENT,
    MODEL_NAME,
    Tracking,
    experiment_id,
    load_model,
    profile_name,
    reconcile_versions,
    register_with_tags,
    registered_uri,
    registry_quiet,
    using,
)

CHAMPION_MODEL = "rice-net-champion"
"""Base name of the registered champion; each profile has its own, `rice-net-champion-<profile>`."""
CHAMPION_ALIAS = "champion"


def champion_model_name(profile: str) -> str:
    """`rice-net-champion-<profile>`: each profile has its own champion and `champion` alias."""
    return profile_name(CHAMPION_MODEL, profile)


class RegisteredEnsemble(NamedTuple):
    """Where the champion went: its run, registered model name and version."""

    run_id: str
    registered_model: str
    model_version: int


class LoadedChampion(NamedTuple):
    """The champion as loaded by its alias: the ensemble module, its registered version, its experiment."""

    ensemble: FoldEnsemble
    version: str
    experiment_version: str | None


class ChampionEnsemble(PythonModel):
    """The champion as an MLflow pyfunc model that holds no weights, only references.

    It names the registered fold models (`models:/rice-net-<profile>/<version>`, one per fold) and loads
    them from the registry when it is loaded, so each network's weights are stored once, in MLflow's
    artifact store. `predict` returns the ensemble P(RICE) of `FoldEnsemble` by the evaluation's decision
    rule for a stacked (B, C, D, H, W) float32 input; `ensemble` is the loaded `FoldEnsemble` (an
    `nn.Module`, e.g. for occlusion maps).

    Args:
        combination: the champion combination key.
        fold_uris: registered model URI of each fold model, in fold order.
        rule: the decision rule the evaluation used (`DecisionRule.as_dict()`); None = the default.
        experiment_version: the experiment the fold models belong to.
    """

    def __init__(
        self,
        combination: str,
        fold_uris: Sequence[str],
        rule: Mapping[str, Any] | None = None,
        experiment_version: str | None = None,
    ) -> None:
        self.combination = combination
        self.fold_uris = tuple(fold_uris)
        self.rule = dict(rule or DecisionRule().as_dict())
        self.experiment_version = experiment_version
        self.ensemble: FoldEnsemble | None = None

    def load_context(self, context: Any) -> None:
        """Load the fold models from the registry the current tracking URI points at."""
        models = [load_model(uri) for uri in self.fold_uris]
        self.ensemble = FoldEnsemble(models, self.combination, DecisionRule(**self.rule))

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Ensemble P(RICE) by the decision rule, shape (B,) float64, for a (B, C, D, H, W) float32 input:
        `FoldEnsemble.predict`, the very computation `evaluation_tables` reports for the test set.

        `np.ndarray` is a hint MLflow infers no schema from: the schema is the logged signature.
        """
        if self.ensemble is None:
            self.load_context(context)
        assert self.ensemble is not None
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        prob, _ = self.ensemble.predict(x)
        return prob

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the references only, never loaded weights."""
        state = {k: v for k, v in self.__dict__.items() if k != "ensemble"}
        return {**state, "ensemble": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle, defaulting what a champion pickled by an earlier version lacks."""
        self.__dict__.update({"rule": DecisionRule().as_dict(), "experiment_version": None, **state})


def register_champion(
    *,
    combination: str,
    fold_uris: Sequence[str],
    fold_versions: Mapping[str, str],
    input_example: np.ndarray,
    tags: Mapping[str, str],
    tracking: Tracking,
    registered_model: str,
    rule: DecisionRule,
    experiment_version: str,
    experiment: str = DEFAULT_EXPERIMENT,
) -> RegisteredEnsemble:
    """Log the champion as one pyfunc model referring to its fold versions and register it, tagged; the
    alias moves later (`promote_champion`, after the catalog recorded the version).

    Args:
        combination: the champion combination (a version tag).
        fold_uris: registered model URI of each fold model, in fold order.
        fold_versions: fold -> registered version it holds (params and a version tag).
        input_example: a (1, C, D, H, W) input for the signature (only its shape is kept).
        tags: run tags (e.g. the Dagster run id).
        tracking: the MLflow backend.
        registered_model: registered model name (`champion_model_name(profile)`).
        rule: the decision rule of the evaluation the champion was chosen in.
        experiment_version: the experiment its fold models belong to (run and version tag).
        experiment: the MLflow experiment of its run.

    Raises:
        RuntimeError: MLflow did not register a version.
    """
    champion = ChampionEnsemble(combination, fold_uris, rule.as_dict(), experiment_version)
    with tracking.lock(), using(tracking):
        champion.load_context(None)
        example = np.asarray(input_example, dtype=np.float32)
        signature = infer_signature(example, champion.predict(None, example))
        client = tracking.client()
        exp = experiment_id(client, experiment, tracking.artifact_root)
        run_tags = {
            **tags,
            "role": "champion",
            "combination": combination,
            EXPERIMENT_TAG: experiment_version,
        }
        with mlflow.start_run(experiment_id=exp, run_name=f"champion {combination}", tags=run_tags) as run:
            mlflow.log_params(
                {
                    "combination": combination,
                    **rule.as_dict(),
                    **{f"fold_{k}_version": v for k, v in fold_versions.items()},
                }
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
                )
        version_tags = {
            "combination": combination,
            "fold_versions": ",".join(f"{k}:{v}" for k, v in sorted(fold_versions.items())),
            EXPERIMENT_TAG: experiment_version,
            **{k: str(v) for k, v in rule.as_dict().items()},
            **{k: v for k, v in tags.items() if k == "dagster_run_id"},
        }
        version = str(register_with_tags(info.model_uri, registered_model, version_tags))
    return RegisteredEnsemble(run.info.run_id, registered_model, int(version))


def promote_champion(registered_model: str, version: int | str, tracking: Tracking) -> None:
    """Point the `champion` alias at `version` and mark it committed: the step's last MLflow write."""
    with tracking.lock():
        client = tracking.client()
        client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, str(version))
        client.set_model_version_tag(registered_model, str(version), COMMITTED_TAG, "true")


def reconcile_champion(registered_model: str, recorded: str | None, tracking: Tracking) -> list[str]:
    """Make the registry agree with the catalog's champion (`recorded`: its version, None if none).

    Uncommitted versions the catalog does not record are deleted (`reconcile_versions`); the alias is
    moved to `recorded`, or removed when the catalog records no champion.

    Returns:
        The deleted version numbers.
    """
    deleted = reconcile_versions(registered_model, {}, [recorded] if recorded else [], tracking)
    with tracking.lock():
        client = tracking.client()
        if not client.search_registered_models(f"name = '{registered_model}'"):
            return deleted
        aliases = client.get_registered_model(registered_model).aliases
        current = None if aliases.get(CHAMPION_ALIAS) is None else str(aliases[CHAMPION_ALIAS])
        if recorded and current != str(recorded):
            client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, str(recorded))
        elif not recorded and current is not None:
            client.delete_registered_model_alias(registered_model, CHAMPION_ALIAS)
    return deleted


def load_champion(registered_model: str, tracking: Tracking | None = None) -> LoadedChampion:
    """The champion by its alias: its fold ensemble (an `nn.Module` with the evaluated decision rule,
    CPU, eval mode), its registered version and its experiment version.

    Args:
        registered_model: `champion_model_name(profile)`.
        tracking: the backend; None = MLflow's current tracking URI.

    Raises:
        mlflow.exceptions.MlflowException: no model carries the `champion` alias.
    """
    with using(tracking):
        client = MlflowClient()
        version = client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
        model = mlflow.pyfunc.load_model(registered_uri(int(version.version), registered_model))
    python_model = model.unwrap_python_model()
    ensemble = python_model.ensemble
    assert isinstance(ensemble, FoldEnsemble)
    return LoadedChampion(ensemble, str(version.version), python_model.experiment_version)


def champion_uri(registered_model: str) -> str:
    """`models:/<registered_model>@champion`, e.g. `models:/rice-net-champion-quick@champion`."""
    return f"models:/{registered_model}@{CHAMPION_ALIAS}"


def log_evaluation_run(
    files: Mapping[str, Path],
    *,
    tags: Mapping[str, str],
    tracking: Tracking,
    experiment: str = DEFAULT_EXPERIMENT,
) -> str:
    """One MLflow run holding the evaluation's tables and plots as artifacts; returns its id."""
    with tracking.lock():
        client = MlflowClient(tracking_uri=tracking.tracking_uri, registry_uri=tracking.tracking_uri)
        exp = experiment_id(client, experiment, tracking.artifact_root)
        with mlflow.start_run(
            experiment_id=exp, run_name="evaluation", tags={**tags, "role": "evaluation"}
        ) as run:
            for path in files.values():
                mlflow.log_artifact(str(path), artifact_path="evaluation")
    return str(run.info.run_id)
