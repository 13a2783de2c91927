"""Concurrent writers: five fold_models cells materialised at once in five processes (as Dagster's run
launcher runs them), each writing the catalog and the MLflow registry, while this process keeps
reading the catalog; no write fails on a lock, no row is lost, reads never wait for the writers."""

import time

from mlflow import MlflowClient

from data_catalog import Catalog
from rice_models.tracking import COMMITTED_TAG, default_tracking
from tests.rice_assets.crash import orphans, split_cohort

N = 5
TRAINING = {"epochs": 2, "augment": False}
FIT = {"ops": {"fold_models": {"config": TRAINING}}}


def test_concurrent_cells_write_every_row(tmp_path, monkeypatch) -> None:
    paths, runner = split_cohort(tmp_path, monkeypatch, TRAINING)

    catalog = Catalog(paths.catalog, timeout=5.0)
    procs = [runner.start(["fold_models"], f"dose|{fold}", FIT) for fold in range(N)]
    reads, slowest = 0, 0.0
    while any(p.is_alive() for p in procs):
        start = time.monotonic()
        catalog.query("SELECT count(*) FROM artifacts")
        slowest = max(slowest, time.monotonic() - start)
        reads += 1
        time.sleep(0.05)
    assert [p.exitcode for p in procs] == [0] * N, "a cell failed (a lock error would show here)"
    assert reads > 10 and slowest < 5.0

    models = catalog.query("SELECT * FROM models WHERE fold IS NOT NULL ORDER BY fold")
    assert [m["fold"] for m in models] == list(range(N))
    assert all(m["mlflow_run_id"] and m["model_version"] and m["experiment_version"] for m in models)
    assert len(catalog.artifacts("fold_models", profile="quick")) == N
    uri = default_tracking(paths).tracking_uri
    versions = MlflowClient(uri, uri).search_model_versions("name = 'rice-net-quick'")
    assert sorted(str(v.version) for v in versions) == sorted(m["model_version"] for m in models)
    assert all(v.tags.get(COMMITTED_TAG) == "true" for v in versions)
    assert orphans(paths) == []
