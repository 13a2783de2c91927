"""MLflow tracking and model registry for the fold models (framework-free apart from MLflow).

Embedded default (`default_tracking`): a SQLite backend `sqlite:///<RICE_HOME>/mlflow.db` with artifacts
under `<RICE_HOME>/mlartifacts/<experiment>`; `$MLFLOW_TRACKING_URI` overrides the backend.

SQLite allows one writer at a time and MLflow neither waits long nor retries, so concurrent cells
(separate processes) would fail with "database is locked", and two processes creating a fresh
database race on its schema. Every write here therefore runs under a cross-process `filelock.FileLock`
beside the database (`<db>.lock`); `Tracking.lock()` is there for other writers too (e.g. setting a
model alias). Backends other than SQLite handle concurrency themselves and take no lock.

MLflow keeps its tracking URI in process-global state and copies it into `$MLFLOW_TRACKING_URI`.
`configure_mlflow` sets that global URI (so MLflow's fluent API, used by callers too, writes to the
configured backend) but leaves `$MLFLOW_TRACKING_URI` as the user set it, so a later
`default_tracking()` for another RICE_HOME (tests) is not misled by an earlier configuration. The
functions that take `tracking=` point MLflow at it for the duration of the call and restore the
previous URI afterwards (not thread-safe: one cell per process). The registry URI is left unset, so
MLflow uses the tracking backend as the registry.

Crash safety: a version is created with all its tags at once (`mlflow.register_model(tags=...)`),
among them the Dagster run id (`RUN_TAG`); it is marked `COMMITTED_TAG` only after the catalog has
recorded it, as the last write of the step. A step killed in between leaves an uncommitted version the
catalog does not know: the next materialisation of the same cell deletes it (`reconcile_versions`).
Logging a cell again within the same Dagster run (a step retry) reuses the version that run made.

One MLflow run per cell: params (the caller's plus the fold model's own), per-epoch metrics
`train_loss`, `val_macro_f1`, `val_loss` (step = epoch), summary metrics, a `fold_result.json`
artifact (history and validation predictions), and the selected weights as an MLflow PyTorch model
with a tensor signature, registered as a new version of `rice-net` tagged `combination` and `fold`.
"""

import contextlib
import io
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any, NamedTuple, cast

import mlflow
import mlflow.pytorch
import monai
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from torch import nn

from rice_models.mlflow_backend import DEFAULT_EXPERIMENT as DEFAULT_EXPERIMENT  # re-exported
from rice_models.mlflow_backend import REGISTERED_MODEL as REGISTERED_MODEL
from rice_models.mlflow_backend import Tracking as Tracking
from rice_models.mlflow_backend import default_tracking as default_tracking
from rice_models.mlflow_backend import profile_name as profile_name
from rice_models.mlflow_backend import sqlite_uri as sqlite_uri
from rice_models.training import FoldResult

MODEL_NAME = "model"
RUN_TAG = "dagster_run_id"
"""Run and version tag: the Dagster run that made it."""
COMMITTED_TAG = "rice.committed"
"""Version tag set last, once the catalog records the version; a version without it is pending."""
EPOCH_METRICS = ("train_loss", "val_macro_f1", "val_loss")
_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call
_ENV = "MLFLOW_TRACKING_URI"
SERIALIZATION_FORMAT = "pickle"
"""The module itself is pickled, so it loads back as the MONAI ResNet (any batch size, trainable,
usable by occlusion sensitivity). MLflow 3's default, `pt2` (torch.export), would trace a fixed graph
and need the input example stored as an artifact (~400 MB at 224^3)."""


class LoggedRun(NamedTuple):
    """Where a fold model went: its MLflow run and its version of the registered model."""

    run_id: str
    model_version: int


_active: Tracking | None = None


def _set_uri(uri: str | None) -> None:
    """Set (None: unset) MLflow's process-global tracking URI, leaving `$MLFLOW_TRACKING_URI` as it was."""
    env_before = os.environ.get(_ENV)
    mlflow.set_tracking_uri(cast(str, uri))  # None unsets it
    if env_before is None:
        os.environ.pop(_ENV, None)
    else:
        os.environ[_ENV] = env_before


@contextmanager
def using(tracking: Tracking | None) -> Iterator[None]:
    """Point MLflow's fluent API at `tracking` for a block, then restore the previous URI.

    Args:
        tracking: the backend to use inside the block; None leaves MLflow's current URI alone.
    """
    if tracking is None:
        yield
        return
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    _set_uri(tracking.tracking_uri)
    try:
        yield
    finally:
        _set_uri(previous)


def configure_mlflow(tracking_uri: str, artifact_root: Path) -> Tracking:
    """Point MLflow at a backend for this process and create its schema, once, under the lock.

    Sets MLflow's global tracking URI (not `$MLFLOW_TRACKING_URI`; module docstring) and makes the
    backend the default of this module's functions.

    Args:
        tracking_uri: backend URI (`sqlite:///...`, `http://...`, `postgresql://...`).
        artifact_root: folder for the artifacts of the experiments created here.

    Raises:
        ValueError: an empty URI.
    """
    global _active
    if not tracking_uri:
        raise ValueError("tracking_uri must not be empty")
    tracking = Tracking(tracking_uri=tracking_uri, artifact_root=Path(artifact_root).resolve())
    with tracking.lock():
        client = tracking.client()
        client.search_experiments(max_results=1)  # creates / migrates the schema
        client.search_registered_models(max_results=1)
    _set_uri(tracking_uri)
    _active = tracking
    return tracking


def _resolve(tracking: Tracking | None) -> Tracking:
    if tracking is not None:
        return tracking
    if _active is None:
        raise ValueError("MLflow is not configured: call configure_mlflow() or pass tracking=")
    return _active


def experiment_id(client: MlflowClient, name: str, artifact_root: Path) -> str:
    """Get or create an experiment; a new one keeps its artifacts in `<artifact_root>/<slug of name>`.

    Call it under `Tracking.lock()` (two processes may otherwise both create it).

    Args:
        client: a client of the backend.
        name: experiment name.
        artifact_root: the backend's artifact folder.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"
    location = artifact_root / slug
    location.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=location.as_uri())


def _batch_input(input_example: np.ndarray, n_channels: int) -> np.ndarray:
    """The example as a float32 batch of one, checked against the model's channel count."""
    x = np.asarray(input_example, dtype=np.float32)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5 or x.shape[1] != n_channels:
        raise ValueError(
            f"input_example must be (1, {n_channels}, D, H, W) or ({n_channels}, D, H, W); got {x.shape}"
        )
    return x[:1]


def _epoch_metrics(result: FoldResult) -> list[Metric]:
    now = int(time.time() * 1000)
    return [  # an epoch that was not validated has no val_* metrics
        Metric(key, float(value), now, record.epoch)
        for record in result.history
        for key in EPOCH_METRICS
        if (value := getattr(record, key)) is not None
    ]


def _log_records(client: MlflowClient, run_id: str, result: FoldResult, params: Mapping[str, Any]) -> None:
    """Params, per-epoch and summary metrics, and the fold_result.json artifact of one run."""
    client.log_batch(run_id, params=[Param(str(k), str(v)) for k, v in params.items()])
    metrics = _epoch_metrics(result)
    now = int(time.time() * 1000)
    summary = {
        "best_val_macro_f1": result.best.val_macro_f1,
        "best_val_loss": result.best.val_loss,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
    }
    metrics += [Metric(key, float(value), now, 0) for key, value in summary.items() if value is not None]
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
    client.log_dict(run_id, result.summary(), "fold_result.json")


def _fold_params(result: FoldResult, combination: str, fold: int | str) -> dict[str, Any]:
    return {
        "combination": combination,
        "fold": str(fold),
        "channels": ",".join(result.channels),
        "n_input_channels": result.n_input_channels,
        "conv1_t_stride": result.conv1_t_stride,
        "widen_factor": result.widen_factor,
        "n_train": result.n_train,
        "n_val": len(result.val_patient_ids),
        "device": result.device,
        "amp": result.amp,
    }


@contextmanager
def registry_quiet() -> Iterator[None]:
    """Keep MLflow's registry notices ("Registered model ... already exists. Creating a new version",
    "Created version ...") off the terminal: `log_model(registered_model_name=...)` prints them to
    stderr itself, not through logging, once per model. The version is returned and recorded instead.
    """
    with redirect_stderr(io.StringIO()):
        yield


def log_registered_model(
    model: nn.Module,
    input_example: np.ndarray,
    registered_model: str,
    tags: Mapping[str, str] | None = None,
) -> int:
    """Log a torch model in the active MLflow run with a tensor signature, and register it.

    The signature is inferred from `input_example` and the model's output on it; the example itself
    is not stored. Call it inside `mlflow.start_run()` under `Tracking.lock()`.

    Args:
        model: the module, on the CPU (put in evaluation mode; pickled, so it loads back as the same
            class: see `SERIALIZATION_FORMAT`).
        input_example: a float array the model accepts, e.g. (1, C, D, H, W).
        registered_model: registered model name; a new version is created.
        tags: tags of the new version, set in the same call that creates it.

    Returns:
        The new version number.

    Raises:
        RuntimeError: MLflow did not register a version.
    """
    example = np.asarray(input_example, dtype=np.float32)
    model.eval()
    with torch.no_grad():
        output = model(torch.as_tensor(example)).detach().cpu().numpy()
    with registry_quiet():
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            signature=infer_signature(example, output),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}"],
            serialization_format=SERIALIZATION_FORMAT,
        )
        return register_with_tags(info.model_uri, registered_model, tags)


def register_with_tags(model_uri: str, registered_model: str, tags: Mapping[str, str] | None) -> int:
    """Register `model_uri` as a new version of `registered_model` carrying `tags` from its creation on.

    Raises:
        RuntimeError: MLflow did not register a version.
    """
    with registry_quiet():
        version = mlflow.register_model(model_uri, registered_model, tags=dict(tags or {}))
    if version is None or version.version is None:
        raise RuntimeError(f"MLflow did not register a version of {registered_model!r}")
    return int(version.version)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def versions_tagged(client: MlflowClient, registered_model: str, tags: Mapping[str, str]) -> list[Any]:
    """The versions of `registered_model` carrying every tag of `tags` (MLflow `ModelVersion`s)."""
    where = [f"name = {_quote(registered_model)}"]
    where += [f"tags.`{key}` = {_quote(value)}" for key, value in tags.items()]
    return list(client.search_model_versions(" and ".join(where)))


def reconcile_versions(
    registered_model: str,
    tags: Mapping[str, str],
    keep: Iterable[str],
    tracking: Tracking | None = None,
) -> list[str]:
    """Bring the registry in line with the catalog for the versions carrying `tags` (e.g. one cell).

    A version the catalog records (`keep`) is marked committed if a crash left it unmarked; an
    uncommitted version the catalog does not record (its step died between registering and committing)
    is deleted with its MLflow run. Committed versions the catalog no longer records stay: they are
    history (an earlier champion may refer to them). Runs under the backend's write lock.

    Args:
        registered_model: the registered model.
        tags: which versions to look at, e.g. `{"combination": "dose", "fold": "0"}`.
        keep: the version numbers the catalog records.
        tracking: the backend; None = the one `configure_mlflow` set.

    Returns:
        The deleted version numbers.
    """
    tracking = _resolve(tracking)
    kept = {str(v) for v in keep}
    deleted: list[str] = []
    with tracking.lock():
        client = tracking.client()
        for version in versions_tagged(client, registered_model, tags):
            if version.tags.get(COMMITTED_TAG) == "true":
                continue
            if str(version.version) in kept:
                client.set_model_version_tag(registered_model, str(version.version), COMMITTED_TAG, "true")
                continue
            client.delete_model_version(registered_model, str(version.version))
            if version.run_id:
                with contextlib.suppress(MlflowException):
                    client.delete_run(version.run_id)
            deleted.append(str(version.version))
    return deleted


def mark_committed(registered_model: str, version: int | str, tracking: Tracking | None = None) -> None:
    """Tag a version committed: the last MLflow write of a step, after the catalog recorded it."""
    tracking = _resolve(tracking)
    with tracking.lock():
        tracking.client().set_model_version_tag(registered_model, str(version), COMMITTED_TAG, "true")


def log_fold_run(
    result: FoldResult,
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    combination: str,
    fold: int | str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    input_example: np.ndarray,
    registered_model: str = REGISTERED_MODEL,
    tracking: Tracking | None = None,
    version_tags: Mapping[str, str] | None = None,
) -> LoggedRun:
    """Record one cell as an MLflow run and register its model as a new version (module docstring).

    Args:
        result: the trained fold model.
        experiment: MLflow experiment name (created with its artifact location if missing).
        combination: the cell's channel combination key (a version tag and a param).
        fold: the cell's fold (a version tag and a param).
        params: run params from the caller: profile settings, data artifact ids, ...
        tags: run tags from the caller, e.g. the Dagster run id.
        input_example: one input, (C, D, H, W) or (1, C, D, H, W); only its shape and the model's
            output on it are kept (the signature), not its values.
        registered_model: registered model name.
        tracking: the backend; None = the one `configure_mlflow` set last in this process.
        version_tags: further tags of the registered version (e.g. the experiment version).

    Raises:
        ValueError: MLflow not configured, or an input example of the wrong shape.
    """
    tracking = _resolve(tracking)
    example = _batch_input(input_example, result.n_input_channels)
    model = result.build_model()
    all_params = {**(params or {}), **_fold_params(result, combination, fold)}
    run_tags = {**(tags or {}), "combination": combination, "fold": str(fold)}
    cell = {"combination": combination, "fold": str(fold)}
    tags_of_version = {**(version_tags or {}), **cell}
    if RUN_TAG in run_tags:
        tags_of_version[RUN_TAG] = run_tags[RUN_TAG]
    with tracking.lock(), using(tracking):
        client = tracking.client()
        if RUN_TAG in run_tags and (
            same := versions_tagged(client, registered_model, {**cell, RUN_TAG: run_tags[RUN_TAG]})
        ):
            return LoggedRun(run_id=str(same[0].run_id), model_version=int(same[0].version))  # a retry
        exp_id = experiment_id(client, experiment, tracking.artifact_root)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{combination}|{fold}", tags=run_tags) as run:
            _log_records(client, run.info.run_id, result, all_params)
            version = log_registered_model(model, example, registered_model, tags_of_version)
    return LoggedRun(run_id=run.info.run_id, model_version=version)


def model_uri(run_id_or_uri: str) -> str:
    """A model URI: `models:/...` and `runs:/...` pass through; a bare run id -> `runs:/<id>/model`.

    Args:
        run_id_or_uri: an MLflow run id or model URI.
    """
    if run_id_or_uri.startswith(("models:/", "runs:/")):
        return run_id_or_uri
    return f"runs:/{run_id_or_uri}/{MODEL_NAME}"


def registered_uri(version: int, registered_model: str = REGISTERED_MODEL) -> str:
    """`models:/<name>/<version>`."""
    return f"models:/{registered_model}/{version}"


def load_model(run_id_or_uri: str, *, tracking: Tracking | None = None) -> nn.Module:
    """Load a logged model onto the CPU in evaluation mode.

    Args:
        run_id_or_uri: a run id, `runs:/<id>/model`, or `models:/rice-net/<version>` (or `@alias`).
        tracking: the backend; None = MLflow's current tracking URI (the one `configure_mlflow` set).
    """
    with using(tracking):
        model = mlflow.pytorch.load_model(model_uri(run_id_or_uri), map_location="cpu")
    return model.eval()


@contextmanager
def write_lock(tracking: Tracking | None = None) -> Iterator[None]:
    """Hold the backend's cross-process write lock (for other MLflow writes, e.g. aliases).

    Args:
        tracking: the backend; None = the one `configure_mlflow` set last in this process.
    """
    with _resolve(tracking).lock():
        yield
