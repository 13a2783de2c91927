"""The issue's "done when": a synthetic cohort run with `rice run`, then grown by 20 labelled patients (and
one earlier development patient withdrawn) and run again: the test set is frozen, the withdrawn patient is
gone, and every fold model behind the new table carries the new experiment version."""

import csv
import shutil
from pathlib import Path

import dagster as dg
import pytest

from data_catalog import Catalog
from rice_assets.constants import PATIENTS_PARTITION
from rice_assets.experiments import read_experiment
from rice_models.synth import generate_cohort
from tests.rice_assets.helpers import rice_run

OP_CONFIG = {"fold_models": {"epochs": 1, "augment": False}, "evaluation_tables": {"n_boot": 100}}
COMBINATIONS = ["dose", "postop+event+dose"]


def _grow(landing: Path, scratch: Path, n_before: int, n_new: int, withdrawn: str) -> None:
    """Append `n_new` labelled patients (the next ids of the same synthetic cohort) to the landing zone and
    remove `withdrawn`'s row from cohort.csv, leaving every other earlier row as it was."""
    bigger = generate_cohort(scratch, n_before + n_new, seed=8, spacing_mm=4.0, n_test=5, n_unlabelled=0)
    rows = list(csv.DictReader((landing / "cohort.csv").open()))
    fields = list(rows[0])
    rows = [r for r in rows if r["patient_id"] != withdrawn]
    for spec in bigger.patients[n_before:]:
        shutil.copytree(scratch / spec.patient_id, landing / spec.patient_id)
        row = spec.csv_row()
        rows.append({k: row.get(k, "") for k in fields} | {"label": spec.label})
    with (landing / "cohort.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow
def test_a_grown_cohort_keeps_its_test_set_and_retrains_one_new_experiment(rice_home, tmp_path):
    rice_paths = rice_home
    generate_cohort(rice_paths.landing, n_patients=13, seed=8, spacing_mm=4.0, n_test=3, n_unlabelled=1)
    first = rice_run(rice_paths, op_config=OP_CONFIG, combinations=COMBINATIONS)
    assert first.ok, first.failures
    before = read_experiment(rice_paths, "quick")
    development = {p for fold in before["folds"] for p in fold["val"]}
    withdrawn = sorted(development)[0]

    _grow(rice_paths.landing, tmp_path / "bigger", 13, 20, withdrawn)
    second = rice_run(rice_paths, op_config=OP_CONFIG, combinations=COMBINATIONS)
    assert second.ok, second.failures
    after = read_experiment(rice_paths, "quick")
    version = after["experiment_version"]
    assert version != before["experiment_version"]

    # the frozen test set
    assert set(before["test"]) <= set(after["test"]), "every earlier test patient is still in the test set"
    assert not development & set(after["test"]), "no earlier development patient is in it"
    assert len({*after["test"], *(p for f in after["folds"] for p in f["val"])}) > 30

    # the withdrawn patient left the cohort, its partition, the experiment and the lake
    catalog = Catalog(rice_paths.catalog)
    assert catalog.get_patient(withdrawn).withdrawn is not None  # type: ignore[union-attr]
    with dg.DagsterInstance.get() as instance:
        assert withdrawn not in instance.get_dynamic_partitions(PATIENTS_PARTITION)
    assert withdrawn not in after["labels"] and withdrawn not in after["unlabelled"]
    assert not list(rice_paths.lake.glob(f"**/{withdrawn}"))

    # every fold model behind the new table carries the new experiment version
    ablation = catalog.query("SELECT * FROM ablation WHERE experiment_version = ?", [version])
    assert {r["combination"] for r in ablation} == set(COMBINATIONS)
    cells = catalog.artifacts("fold_models", profile="quick")
    assert len(cells) == 10 and {c.metadata["experiment_version"] for c in cells} == {version}
    evaluation = catalog.get_artifact("evaluation_tables@quick/__all__/ablation")
    assert evaluation is not None and evaluation.metadata["experiment_version"] == version
    behind = {n.id for n in catalog.ancestors(evaluation.artifact_id) if n.asset == "fold_models"}
    assert behind == {c.artifact_id for c in cells}
    models = catalog.query("SELECT experiment_version FROM models WHERE profile = 'quick'")
    assert {m["experiment_version"] for m in models} == {version}, "fold models and the champion"
    tested = catalog.query(
        "SELECT DISTINCT patient_id FROM predictions WHERE scope = 'test' AND experiment_version = ?",
        [version],
    )
    assert {r["patient_id"] for r in tested} == set(after["test"])
    # the earlier experiment's table is still in the catalog, reported separately
    assert catalog.query(
        "SELECT count(*) AS n FROM ablation WHERE experiment_version = ?", [before["experiment_version"]]
    ) == [{"n": 2}]
