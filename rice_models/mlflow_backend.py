"""Where MLflow is and what rice calls things in it, without importing MLflow, torch or MONAI.

The Dagster definitions need these names and the embedded default backend when they load; every run
process loads the definitions, so the heavy libraries are imported only by the steps that use them
(`rice_models.tracking`, `rice_models.registry`). `rice_models.tracking` documents the backend.
"""

import dataclasses
import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from rice_models.paths import RicePaths

if TYPE_CHECKING:
    from mlflow import MlflowClient

REGISTERED_MODEL = "rice-net"
"""Base name of the registered fold models; each profile has its own, `rice-net-<profile>`."""
DEFAULT_EXPERIMENT = "rice-net"
"""Base name of the MLflow experiment; each profile has its own, `rice-net-<profile>`."""
LOCK_TIMEOUT_S = 900.0
_SQLITE = "sqlite:///"


def profile_name(base: str, profile: str) -> str:
    """The MLflow name (registered model or experiment) of a profile: `<base>-<profile>`, so `quick` and
    `paper` models, runs and aliases never mix.

    Raises:
        ValueError: an empty profile name.
    """
    if not profile:
        raise ValueError("profile must be named")
    return f"{base}-{profile}"


@dataclasses.dataclass(frozen=True)
class Tracking:
    """An MLflow backend and the folder under which its experiments keep their artifacts.

    Args:
        tracking_uri: backend (and registry) URI, e.g. `sqlite:////abs/mlflow.db`.
        artifact_root: experiments created here store artifacts in `<artifact_root>/<experiment>`.
    """

    tracking_uri: str
    artifact_root: Path

    @property
    def lock_path(self) -> Path | None:
        """`<db>.lock` for a SQLite backend, None for others."""
        if not self.tracking_uri.startswith(_SQLITE):
            return None
        return Path(self.tracking_uri[len(_SQLITE) :] + ".lock")

    def lock(self) -> AbstractContextManager[Any]:
        """A context that holds the cross-process write lock (a no-op for non-SQLite backends)."""
        path = self.lock_path
        if path is None:
            return nullcontext()
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path, timeout=LOCK_TIMEOUT_S)

    def client(self) -> "MlflowClient":
        """A client bound to this backend (tracking and registry)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


def sqlite_uri(db: Path) -> str:
    """The SQLAlchemy URI of a SQLite file (absolute path)."""
    return f"{_SQLITE}{Path(db).resolve()}"


def default_tracking(paths: RicePaths | None = None) -> Tracking:
    """The embedded default under RICE_HOME, with `$MLFLOW_TRACKING_URI` overriding the backend.

    Args:
        paths: the RICE_HOME layout; None reads the environment.
    """
    paths = paths or RicePaths.from_env()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(paths.mlflow_db)
    return Tracking(tracking_uri=uri, artifact_root=paths.mlartifacts)
