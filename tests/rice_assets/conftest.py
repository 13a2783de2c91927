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


@pytest.fixture
def rice_home(rice_paths: RicePaths, monkeypatch: pytest.MonkeyPatch) -> RicePaths:
    """`rice_paths` prepared as `rice run` prepares RICE_HOME (dagster.yaml, DAGSTER_HOME inside it), with
    the environment a daemon and its runs read (restored after the test)."""
    from rice_assets.home import prepare_home

    monkeypatch.setenv("RICE_HOME", str(rice_paths.home))
    monkeypatch.setenv("RICE_LANDING", str(rice_paths.landing))
    monkeypatch.setenv("DAGSTER_HOME", str(rice_paths.dagster_home))
    monkeypatch.setenv("RICE_PROFILE", "quick")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    prepare_home(rice_paths)
    return rice_paths
