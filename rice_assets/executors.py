"""Which Dagster executor runs the pipeline's steps: chosen by a YAML file, never by editing code.

`RICE_EXECUTOR` names a YAML file (examples in `deploy/`)::

    executor: celery            # in_process | multiprocess | celery | k8s
    execution:
      config:                   # that executor's own config, exactly as its documentation gives it
        broker: redis://redis:6379/0
        backend: redis://redis:6379/1

The `execution: config:` block is the one Dagster run config and `dagster-celery worker start -y FILE`
read, so one file configures both the runs and the Celery workers. Unset, the definitions keep Dagster's
default executor (multiprocess, switchable to in-process by run config). The executor applies to every
run the instance launches from these definitions: the UI, backfills, sensors, schedules,
`dagster asset materialize` and `dagster job launch`; a run executed in-process by Python
(`execute_in_process`, `dagster.materialize`) always runs in its own process.

Errors: an unknown executor name, a missing file, or config that the executor's schema refuses raises
`ExecutorConfigError` naming the file and the problem, when the definitions load.
"""

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

EXECUTOR_ENV = "RICE_EXECUTOR"
"""Environment variable naming the executor YAML file."""

K8S_CONFIG_TAG = "dagster-k8s/config"
"""Op tag read by dagster-k8s's executors and run launcher: Kubernetes settings of a step's pod."""

GPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
    },
}
"""One GPU for the pod of a step that trains (`fold_models`): the Kubernetes device plugin gives each pod
its own GPU, and pool `gpu` (limit = the number of GPUs) queues the cells for them."""


class ExecutorConfigError(ValueError):
    """The executor YAML names an unknown executor or holds config its schema refuses."""


def _in_process() -> dg.ExecutorDefinition:
    return dg.in_process_executor


def _multiprocess() -> dg.ExecutorDefinition:
    return dg.multiprocess_executor


def _celery() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor


def _k8s() -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor


EXECUTORS: Mapping[str, Callable[[], dg.ExecutorDefinition]] = {
    "in_process": _in_process,
    "multiprocess": _multiprocess,
    "celery": _celery,
    "k8s": _k8s,
}
"""Executor names accepted in the YAML, each with the Dagster executor it selects (imported on use)."""


def load_executor(path: Path) -> dg.ExecutorDefinition:
    """The executor the YAML file at `path` selects, configured with its `execution.config` block.

    Raises:
        ExecutorConfigError: the file is missing or unreadable, names no known executor, or its config is
            refused by that executor's schema (every error listed).
    """
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ExecutorConfigError(f"{EXECUTOR_ENV}={path}: cannot read the executor file: {err}") from err
    if not isinstance(document, dict):
        raise ExecutorConfigError(f"{EXECUTOR_ENV}={path}: expected a mapping with `executor:`")
    name = document.get("executor")
    if name not in EXECUTORS:
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}={path}: executor {name!r} must be one of {sorted(EXECUTORS)}"
        )
    config = (document.get("execution") or {}).get("config") or {}
    executor = EXECUTORS[name]()
    _validate(executor, config, path)
    return executor.configured(config, name=executor.name) if config else executor


def _validate(executor: dg.ExecutorDefinition, config: Mapping[str, Any], path: Path) -> None:
    from dagster._config import process_config

    schema = executor.config_schema
    if schema is None:
        return
    result = process_config(schema.config_type, dict(config))
    if not result.success:
        errors = "; ".join(error.message for error in result.errors or [])
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}={path}: executor {executor.name!r} config refused: {errors}"
        )


def executor_from_env() -> dg.ExecutorDefinition | None:
    """The executor `$RICE_EXECUTOR` selects, or None (Dagster's default) when it is unset or empty."""
    value = os.environ.get(EXECUTOR_ENV, "").strip()
    return load_executor(Path(value)) if value else None
