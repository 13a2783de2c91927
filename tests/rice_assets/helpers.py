"""Shared test helpers for the Dagster layer."""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dagster as dg

from rice_assets.definitions import ALL_ASSETS, ALL_CHECKS
from rice_assets.runner import RunSummary, dagster_daemon, run_pipeline
from rice_models.paths import RicePaths


def materialize(
    selection: Sequence[str] | dg.AssetSelection,
    resources: dict,
    instance: dg.DagsterInstance,
    partition_key: str | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialise `selection` of the real definitions (all assets and checks) on a test RICE_HOME."""
    return dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        selection=selection if isinstance(selection, dg.AssetSelection) else list(selection),
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


@contextlib.contextmanager
def daemon_instance(paths: RicePaths, automation: bool = False) -> Iterator[dg.DagsterInstance]:
    """The persistent instance of a prepared test RICE_HOME (`rice_home` fixture) with a `dagster-daemon`
    running on it, as `rice run` starts one (automation off), or as `rice dev` runs one (automation on)."""
    with (
        dg.DagsterInstance.get() as instance,
        dagster_daemon(paths, instance, echo=lambda _: None, automation=automation),
    ):
        yield instance


def rice_run(paths: RicePaths, echo: Callable[[str], None] = lambda _: None, **kwargs: Any) -> RunSummary:
    """`rice run` on a prepared test RICE_HOME: its own daemon, the backfills, followed to the end."""
    with daemon_instance(paths) as instance:
        return run_pipeline(paths, instance, echo=echo, poll_seconds=0.5, **kwargs)
