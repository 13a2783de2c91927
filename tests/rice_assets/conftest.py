"""Dagster fixtures: a temporary RICE_HOME with its own ephemeral Dagster instance."""

from pathlib import Path

import dagster as dg
import pytest

from rice_assets.resources import rice_resources
from rice_models.paths import RicePaths


@pytest.fixture
def rice_paths(tmp_path: Path) -> RicePaths:
    return RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")


@pytest.fixture
def resources(rice_paths: RicePaths) -> dict:
    return rice_resources(rice_paths)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst
