"""Materialisations in child processes that the test can SIGKILL, and the catalog/registry/lake state
that a crashed-then-re-run RICE_HOME must converge to (the kill and concurrency tests).

Children come from a forkserver that imported Dagster, the definitions, ANTs, torch, MONAI and MLflow
once, so a child starts in a fraction of a second and dozens of kills fit in a test's budget.
"""

import multiprocessing
import os
import signal
import time
from collections.abc import Mapping, Sequence
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import dagster as dg
from mlflow import MlflowClient

from data_catalog import Catalog
from rice_models.atomic import stale_staging
from rice_models.paths import RicePaths
from rice_models.provenance import sha256_of
from rice_models.registry import CHAMPION_ALIAS, champion_model_name
from rice_models.tracking import COMMITTED_TAG, REGISTERED_MODEL, default_tracking, profile_name

_PRELOAD = [
    "dagster",
    "rice_assets.definitions",
    "tests.rice_assets.helpers",
    "ants",  # the steps import these themselves (not the definitions): preloaded, each child has them
    "rice_models.training",
    "rice_models.tracking",
    "rice_models.registry",
    "rice_assets.alembic_scripts",  # as the run launcher preloads it: one forkserver serves the session
]
_context: Any = None
_ITK_THREADS = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"

MODEL_ASSETS = ("fold_models", "champion_model")
"""Assets whose file is a reference to an MLflow version (a new number on each run): compared by
their catalog rows without the checksum."""
VERSION_TABLES = ("/html_report",)
"""Artifact ids (suffixes) of files that list those MLflow version numbers (the HTML report's "Model
versions" table): compared likewise."""


def names_mlflow_versions(artifact_id: str, asset: str) -> bool:
    """True for an artifact whose bytes change with MLflow's version numbers alone."""
    return asset in MODEL_ASSETS or artifact_id.endswith(VERSION_TABLES)


def context() -> Any:
    """The forkserver context, preloaded once per test session, with ITK on one thread so that ANTs
    registration is bit-reproducible (see `rice_models.imaging.registration`)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
        before = os.environ.get(_ITK_THREADS)
        os.environ[_ITK_THREADS] = "1"
        try:
            forkserver.ensure_running()
        finally:
            if before is None:
                os.environ.pop(_ITK_THREADS, None)
            else:
                os.environ[_ITK_THREADS] = before
    return _context


def materialise_in_child(
    home: str,
    landing: str,
    dagster_home: str,
    selection: Sequence[str],
    partition: str | None,
    run_config: Mapping[str, Any] | None,
) -> None:
    """Child body: one materialisation against the test RICE_HOME and its persistent Dagster instance."""
    import dagster as dg

    from rice_assets.resources import rice_resources
    from tests.rice_assets.helpers import materialize

    os.environ["DAGSTER_HOME"] = dagster_home
    paths = RicePaths(home=Path(home), landing=Path(landing))
    with dg.DagsterInstance.get() as instance:
        result = materialize(
            list(selection), rice_resources(paths), instance, partition, dict(run_config or {}), False
        )
    os._exit(0 if result.success else 3)


class Runner:
    """Launch materialisations of one RICE_HOME in child processes; kill them when asked."""

    def __init__(self, paths: RicePaths, dagster_home: Path) -> None:
        self.paths = paths
        self.dagster_home = dagster_home
        dagster_home.mkdir(parents=True, exist_ok=True)

    def start(
        self, selection: Sequence[str], partition: str | None = None, run_config: Mapping | None = None
    ) -> Any:
        args = (
            str(self.paths.home),
            str(self.paths.landing),
            str(self.dagster_home),
            list(selection),
            partition,
            dict(run_config or {}),
        )
        proc = context().Process(target=materialise_in_child, args=args)
        proc.start()
        return proc

    def run(
        self, selection: Sequence[str], partition: str | None = None, run_config: Mapping | None = None
    ) -> float:
        """Materialise to the end; return the seconds it took. Raises if it failed."""
        start = time.monotonic()
        proc = self.start(selection, partition, run_config)
        proc.join(timeout=300)
        if proc.exitcode != 0:
            raise AssertionError(f"{selection} {partition}: exit code {proc.exitcode}")
        return time.monotonic() - start

    def kill_after(
        self,
        delay: float,
        selection: Sequence[str],
        partition: str | None = None,
        run_config: Mapping | None = None,
    ) -> bool:
        """Start a materialisation and SIGKILL it after `delay` seconds; True if it was still running."""
        proc = self.start(selection, partition, run_config)
        proc.join(timeout=delay)
        alive = proc.is_alive()
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
        return alive


def split_cohort(tmp_path: Path, monkeypatch: Any, training: Mapping[str, Any]) -> tuple[RicePaths, Runner]:
    """A registered 16-patient cohort (4 test patients) under `tmp_path` with `cv_splits` materialised by
    a child, and the Runner on it; DAGSTER_HOME points at its instance for the test's duration.

    Args:
        training: `cv_splits`' config (the training settings the cells will use).
    """
    from tests.rice_assets.test_training import fake_registered_cohort

    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    fake_registered_cohort(paths, n=16, n_test=4)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    runner = Runner(paths, tmp_path / "dagster")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("patients", Catalog(paths.catalog).patient_ids())
    runner.run(["cv_splits"], None, {"ops": {"cv_splits": {"config": dict(training)}}})
    return paths, runner


def catalog_state(paths: RicePaths) -> dict[str, Any]:
    """What must be the same after a crash and a plain re-run: every table's rows without times, run ids
    and MLflow numbers; artifact checksums except of files naming MLflow versions
    (`names_mlflow_versions`)."""
    catalog = Catalog(paths.catalog)
    artifacts = sorted(
        (
            a.artifact_id,
            a.path,
            None if names_mlflow_versions(a.artifact_id, a.asset) else a.sha256,
            tuple(sorted(a.parents)),
        )
        for a in catalog.artifacts()
    )
    scans = sorted(
        (s.scan_id, s.source_path, s.sha256) for pid in catalog.patient_ids() for s in catalog.get_scans(pid)
    )
    models = catalog.query(
        "SELECT model_id, combination, fold, registered_name, alias, profile, experiment_version FROM models "
        "ORDER BY model_id"
    )
    return {
        "patients": [(p.patient_id, p.label, p.split) for p in catalog.patients()],
        "scans": scans,
        "artifacts": artifacts,
        "models": models,
        "splits": catalog.query("SELECT * EXCLUDE (created) FROM splits ORDER BY ALL"),
        "experiments": catalog.query(
            "SELECT experiment_version, n_test, n_development FROM experiments ORDER BY 1"
        ),
        "metrics": catalog.query("SELECT * EXCLUDE (created) FROM metrics ORDER BY ALL"),
        "predictions": catalog.query("SELECT * EXCLUDE (created) FROM predictions ORDER BY ALL"),
    }


def differences(state: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, Any]:
    """Per table, the rows only in `state` and only in `reference` (empty when they agree)."""
    out = {}
    for table in sorted(set(state) | set(reference)):
        now, before = [repr(r) for r in state.get(table, [])], [repr(r) for r in reference.get(table, [])]
        if now != before:
            out[table] = {"new": sorted(set(now) - set(before)), "gone": sorted(set(before) - set(now))}
    return out


def orphans(paths: RicePaths, profile: str = "quick") -> list[str]:
    """Everything a crash may have left that nothing accounts for; empty when the home is consistent.

    Files in the lake no artifact row records (staging leftovers included), recorded files missing or
    differing from their checksum, lineage rows whose child is gone, `models` rows whose MLflow
    version does not exist, MLflow versions that are neither committed nor recorded, and a `champion`
    alias that disagrees with the catalog.
    """
    catalog = Catalog(paths.catalog)
    found: list[str] = [f"staging leftover {p}" for p in stale_staging(paths.lake)]
    recorded = {a.path: a for a in catalog.artifacts() if a.path}
    lake_files = {str(p) for p in paths.lake.rglob("*") if p.is_file()}
    found += [f"unrecorded file {p}" for p in sorted(lake_files - set(recorded))]
    for path, artifact in sorted(recorded.items()):
        if not Path(path).is_file() or sha256_of(Path(path)) != artifact.sha256:
            found.append(f"recorded file missing or changed {path}")
    found += [
        f"lineage row of missing child {r['child_id']}"
        for r in catalog.query(
            "SELECT child_id FROM lineage WHERE child_id NOT IN (SELECT artifact_id FROM artifacts)"
        )
    ]
    client = _client(paths)
    models = catalog.query("SELECT registered_name, model_version, alias FROM models")
    recorded_versions = {(m["registered_name"], str(m["model_version"])) for m in models}
    for name in (profile_name(REGISTERED_MODEL, profile), champion_model_name(profile)):
        versions = client.search_model_versions(f"name = '{name}'")
        existing = {(name, str(v.version)) for v in versions}
        found += [
            f"models row without MLflow version {n}/{v}"
            for n, v in recorded_versions
            if n == name and (n, v) not in existing
        ]
        found += [
            f"uncommitted MLflow version {name}/{v.version}"
            for v in versions
            if v.tags.get(COMMITTED_TAG) != "true"
        ]
    champions = [m for m in models if m["alias"] == CHAMPION_ALIAS]
    if champions:
        name = champions[0]["registered_name"]
        alias = client.get_registered_model(name).aliases.get(CHAMPION_ALIAS)
        if str(alias) != str(champions[0]["model_version"]):
            found.append(f"alias {CHAMPION_ALIAS} -> {alias}, catalog says {champions[0]['model_version']}")
    return found


def _client(paths: RicePaths) -> MlflowClient:
    uri = default_tracking(paths).tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
