"""Resources: where RICE_HOME is, and the DuckDB cohort catalog inside it.

The real implementation reads the environment (`RICE_HOME`, `RICE_LANDING`); tests build the
same resources on a temporary RICE_HOME with `rice_resources(RicePaths(...))`.
"""

from pathlib import Path

import dagster as dg

from data_catalog import Catalog
from rice_models.mlflow_backend import Tracking, default_tracking
from rice_models.paths import RicePaths


class RiceHomeResource(dg.ConfigurableResource):
    """The RICE_HOME folder and the landing zone the pipeline reads."""

    home: str
    landing: str

    @property
    def paths(self) -> RicePaths:
        return RicePaths(home=Path(self.home), landing=Path(self.landing))


class CatalogResource(dg.ConfigurableResource):
    """The DuckDB cohort catalog (`$RICE_HOME/catalog.duckdb`)."""

    path: str

    def open(self) -> Catalog:
        """A catalog handle; it opens a short connection per call, safe across processes."""
        return Catalog(Path(self.path))


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + model registry: SQLite in RICE_HOME unless MLFLOW_TRACKING_URI says otherwise."""

    tracking_uri: str
    artifact_root: str

    def tracking(self) -> Tracking:
        """Point this process's MLflow client at the backend (schema created once, under a lock)."""
        from rice_models.tracking import configure_mlflow  # MLflow and torch load in the steps using them

        return configure_mlflow(self.tracking_uri, Path(self.artifact_root))


def rice_resources(paths: RicePaths) -> dict[str, dg.ConfigurableResource]:
    """The resources of one RICE_HOME, keyed as the assets expect them."""
    tracking = default_tracking(paths)
    return {
        "rice_home": RiceHomeResource(home=str(paths.home), landing=str(paths.landing)),
        "catalog": CatalogResource(path=str(paths.catalog)),
        "mlflow": MlflowResource(
            tracking_uri=tracking.tracking_uri, artifact_root=str(tracking.artifact_root)
        ),
    }
