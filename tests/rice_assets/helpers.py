"""Shared test helpers for the Dagster layer."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from rice_assets.definitions import ALL_ASSETS, ALL_CHECKS


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
