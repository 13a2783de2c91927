"""Kill test: SIGKILL materialisations at random points (preprocessing, training, the champion), then
show that a plain re-run converges to the catalog state, artifact checksums and registry of an
uninterrupted run, with no orphan file, row or model version (README "Faults tried and survived")."""

import random

from data_catalog import Catalog
from rice_models.paths import RicePaths
from rice_models.synth import generate_cohort
from tests.rice_assets.crash import Runner, catalog_state, differences, orphans, split_cohort

PREPROCESSING = ["raw_scans", "dose_maps", "registered_volumes"]
TRAINING = {"epochs": 2, "augment": False}
FIT = {"ops": {"fold_models": {"config": TRAINING}}}
CHAMPION = ["evaluation_tables", "champion_model"]
EVALUATE = {"ops": {"evaluation_tables": {"config": {"n_boot": 50}}}}
CELLS = [f"dose|{fold}" for fold in range(5)]


def _kill_many(runner: Runner, rng: random.Random, n: int, jobs: list[tuple], durations: list[float]) -> int:
    """Kill `n` materialisations, each a random job at a random point of its reference duration."""
    killed = 0
    for _ in range(n):
        k = rng.randrange(len(jobs))
        killed += runner.kill_after(rng.uniform(0.0, durations[k]), *jobs[k])
    return killed


def test_killed_preprocessing_converges_on_a_plain_rerun(tmp_path) -> None:
    paths = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    generate_cohort(paths.landing, n_patients=2, seed=3, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    runner = Runner(paths, tmp_path / "dagster")
    runner.run(["cohort_manifest"])
    jobs = [(PREPROCESSING, pid) for pid in Catalog(paths.catalog).patient_ids()]
    durations = [runner.run(*job) for job in jobs]
    reference = catalog_state(paths)
    assert orphans(paths) == []

    killed = _kill_many(runner, random.Random(13), 4, jobs, durations)
    assert killed >= 2, f"only {killed} of 4 runs were still running when killed"
    for job in jobs:
        runner.run(*job)
    assert orphans(paths) == []
    assert differences(catalog_state(paths), reference) == {}


def test_killed_training_and_champion_converge_on_a_plain_rerun(tmp_path, monkeypatch) -> None:
    paths, runner = split_cohort(tmp_path, monkeypatch, TRAINING)
    jobs = [(["fold_models"], cell, FIT) for cell in CELLS] + [(CHAMPION, None, EVALUATE)]
    durations = [runner.run(*job) for job in jobs]
    reference = catalog_state(paths)
    assert orphans(paths) == []

    rng = random.Random(7)
    killed = _kill_many(runner, rng, 12, jobs[:-1], durations[:-1])
    killed += _kill_many(runner, rng, 8, jobs[-1:], durations[-1:])
    assert killed >= 14, f"only {killed} of 20 runs were still running when killed"
    for job in jobs:
        runner.run(*job)
    assert orphans(paths) == []
    assert differences(catalog_state(paths), reference) == {}
