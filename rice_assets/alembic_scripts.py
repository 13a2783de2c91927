"""Dagster's schema-migration scripts, read once in the run workers' forkserver instead of ~5 times a run.

Every `DagsterInstance` on SQLite storage checks each database's schema revision when it first opens it,
and a new run's event-log database is stamped with it (`dagster._core.storage.sql.check_alembic_revision`,
`stamp_alembic_rev`). Each check builds a new alembic `ScriptDirectory`, which reads Dagster's 90 migration
scripts from disk (~25 ms on 2 cores). A run worker opens the instance twice (its tags, then the run) and
initialises the run, index and run-shard databases: the scripts were read ~5 times a run, a third of
Dagster's own time in a short run (`benchmarks/README.md`, issue 9).

`share_script_directories` makes `ScriptDirectory.from_config` return one directory per (ini file, script
location), built at its first use; `rice_assets.launcher`'s forkserver imports this module, which does so
and builds Dagster's three (run, event log, schedule storage), so that every forked run worker inherits
them already read. What is shared is the reading of the scripts of the installed Dagster, which a process
cannot change under itself; the revision checks still query every database.
"""

import importlib
import logging

from alembic.config import Config
from alembic.script import ScriptDirectory

_read_scripts = ScriptDirectory.from_config
_directories: dict[tuple[str | None, str | None], ScriptDirectory] = {}

DAGSTER_STORAGE_MODULES: tuple[str, ...] = (
    "dagster._core.storage.runs.sqlite.sqlite_run_storage",
    "dagster._core.storage.event_log.sqlite.sqlite_event_log",
    "dagster._core.storage.schedules.sqlite.sqlite_schedule_storage",
)
"""The modules whose `alembic/alembic.ini` Dagster's SQLite storages pass to `get_alembic_config`."""


def shared_script_directory(config: Config) -> ScriptDirectory:
    """The `ScriptDirectory` of `config`, read from disk at the first call for its ini file and script
    location and returned again after that (the stand-in for `ScriptDirectory.from_config`)."""
    key = (config.config_file_name, config.get_main_option("script_location"))
    if key not in _directories:
        _directories[key] = _read_scripts(config)
    return _directories[key]


def share_script_directories() -> None:
    """Make `ScriptDirectory.from_config` return shared directories (`shared_script_directory`) in this
    process and the processes it forks from now on."""
    ScriptDirectory.from_config = staticmethod(shared_script_directory)  # type: ignore[method-assign,assignment]


def dagster_alembic_configs() -> list[Config]:
    """The alembic configs Dagster's SQLite storages pass to `check_alembic_revision`, one per module of
    `DAGSTER_STORAGE_MODULES` (Dagster's own `get_alembic_config`, which caches them per process)."""
    from dagster._core.storage.sql import get_alembic_config

    return [get_alembic_config(importlib.import_module(name).__file__) for name in DAGSTER_STORAGE_MODULES]


def read_dagster_scripts() -> None:
    """Read the migration scripts of Dagster's SQLite storages now, resolving their head revision.

    A Dagster that keeps them elsewhere is logged and skipped: the workers then read them at first use.
    """
    try:
        for config in dagster_alembic_configs():
            shared_script_directory(config).as_revision_number("head")
    except Exception:  # a warm-up only: never stop the forkserver
        logging.getLogger(__name__).warning("Dagster's migration scripts were not read ahead", exc_info=True)


share_script_directories()
read_dagster_scripts()
