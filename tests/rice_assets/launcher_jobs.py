"""Jobs for the run launcher tests: one that reports the process it ran in, one that waits to be
interrupted."""

import json
import os
import sys
import time
from pathlib import Path

import dagster as dg

IMPORTED_IN = os.getpid()
"""The process that imported this module: the run's own, when run code is loaded afresh per run."""


@dg.op(config_schema={"out": str})
def report_process(context: dg.OpExecutionContext) -> None:
    Path(context.op_config["out"]).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "parent": os.getppid(),
                "module_imported_in": IMPORTED_IN,
                "torch_loaded": "torch" in sys.modules,
                "alembic_script_directories": _shared_script_directories(),
            }
        )
    )


def _shared_script_directories() -> int | None:
    """How many alembic script directories the process shares (`rice_assets.alembic_scripts`), None if
    it does not share them."""
    module = sys.modules.get("rice_assets.alembic_scripts")
    return None if module is None else len(module._directories)


@dg.op
def wait_to_be_interrupted() -> None:
    time.sleep(300)


@dg.job(executor_def=dg.in_process_executor)
def report_job() -> None:
    report_process()


@dg.job(executor_def=dg.in_process_executor)
def wait_job() -> None:
    wait_to_be_interrupted()
