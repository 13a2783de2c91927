"""`rice_assets.alembic_scripts`: Dagster's migration scripts read once per process, storages unchanged."""

from pathlib import Path

import dagster as dg
from alembic.config import Config
from alembic.script import ScriptDirectory

from rice_assets import alembic_scripts
from tests.rice_assets import launcher_jobs


def test_importing_it_shares_the_script_directories_of_dagsters_storages() -> None:
    """The forkserver imports the module: from then on every storage's check reuses what it read."""
    assert ScriptDirectory.from_config is alembic_scripts.shared_script_directory
    configs = alembic_scripts.dagster_alembic_configs()
    read = [ScriptDirectory.from_config(config) for config in configs]
    assert [ScriptDirectory.from_config(config) for config in configs] == read, "read once, then shared"
    assert len({id(directory) for directory in read}) == len(configs), "one directory per ini file"
    assert all(directory.as_revision_number("head") for directory in read)


def test_another_script_location_gets_its_own_directory(tmp_path: Path) -> None:
    base = alembic_scripts.dagster_alembic_configs()[0]
    other = Config(base.config_file_name)
    (tmp_path / "versions").mkdir()
    (tmp_path / "script.py.mako").write_text("")
    other.set_main_option("script_location", str(tmp_path))
    assert alembic_scripts.shared_script_directory(other) is not alembic_scripts.shared_script_directory(base)
    assert alembic_scripts.shared_script_directory(other).dir == str(tmp_path)


def test_a_new_instance_still_creates_stamps_and_checks_its_databases(tmp_path: Path) -> None:
    """A fresh SQLite instance: run, index and run-shard databases are created and stamped at the head
    revision with the shared directories, and a run executes against them."""
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        result = dg.execute_job(
            dg.reconstructable(launcher_jobs.report_job),
            instance=instance,
            run_config={"ops": {"report_process": {"config": {"out": str(tmp_path / "out.json")}}}},
        )
        assert result.success
        db_revision, head = instance.run_storage.alembic_version()  # type: ignore[attr-defined]
        assert db_revision == head is not None
        kinds = {e.dagster_event.event_type for e in instance.all_logs(result.run_id) if e.dagster_event}
        assert dg.DagsterEventType.RUN_SUCCESS in kinds
    assert (tmp_path / "history" / "runs" / f"{result.run_id}.db").exists(), "the run's own shard was created"
