"""Resources: where RICE_HOME is, and the DuckDB cohort catalog inside it.

The real implementation reads the environment (`RICE_HOME`, `RICE_LANDING`); tests build the
same resources on a temporary RICE_HOME with `rice_resources(RicePaths(...))`.
"""

from pathlib import Path

import dagster as dg

from data_catalog import Catalog
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


def rice_resources(paths: RicePaths) -> dict[str, dg.ConfigurableResource]:
    """The resources of one RICE_HOME, keyed as the assets expect them."""
    return {
        "rice_home": RiceHomeResource(home=str(paths.home), landing=str(paths.landing)),
        "catalog": CatalogResource(path=str(paths.catalog)),
    }
