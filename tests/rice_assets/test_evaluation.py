"""Evaluation, champion, occlusion and prediction assets on a tiny trained `dose` ablation."""

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from data_catalog import Catalog, PatientRecord
from rice_models.occlusion import load_model_input
from rice_models.registry import CHAMPION_MODEL, champion_uri
from rice_models.tracking import configure_mlflow, load_model
from tests.rice_assets.helpers import materialize
from tests.rice_assets.test_training import fake_registered_cohort


@pytest.fixture
def trained_dose_ablation(rice_paths, resources, instance):
    fake_registered_cohort(rice_paths, n=16, n_test=4, n_unlabelled=1)
    instance.add_dynamic_partitions("patients", Catalog(rice_paths.catalog).patient_ids())
    materialize(["cv_splits"], resources, instance)
    config = {"ops": {"fold_models": {"config": {"epochs": 3, "augment": False}}}}
    for fold in range(5):
        materialize(["fold_models"], resources, instance, f"dose|{fold}", config)
    return rice_paths


@pytest.mark.slow
def test_tables_champion_occlusion_and_prediction(trained_dose_ablation, resources, instance) -> None:
    paths = trained_dose_ablation
    catalog = Catalog(paths.catalog)
    result = materialize(
        ["evaluation_tables"],
        resources,
        instance,
        run_config={"ops": {"evaluation_tables": {"config": {"n_boot": 200}}}},
    )
    markdown = result.asset_materializations_for_node("evaluation_tables")[0].metadata["ablation"].value
    assert "synthetic" not in markdown and "real" in markdown and "0.916" in markdown
    (row,) = catalog.query("SELECT * FROM ablation WHERE test_f1 IS NOT NULL")
    assert row["combination"] == "dose" and row["test_f1_lo"] <= row["test_f1"] <= row["test_f1_hi"]
    assert len(catalog.query("SELECT * FROM predictions WHERE scope = 'test'")) == 4
    out = paths.lake_dir("evaluation_tables")
    for name in ("ablation.csv", "cells.csv", "test_predictions.csv", "ablation.png", "roc.png", "report.md"):
        assert (out / name).stat().st_size > 0, name

    champion = materialize(["champion_model"], resources, instance)
    metadata = champion.asset_materializations_for_node("champion_model")[0].metadata
    assert metadata["combination"].value == "dose"
    tracking_uri = resources["mlflow"].tracking_uri
    configure_mlflow(tracking_uri, paths.mlartifacts)
    client = MlflowClient(tracking_uri=tracking_uri)
    tags = client.get_model_version_by_alias(CHAMPION_MODEL, "champion").tags
    assert tags["combination"] == "dose" and len(tags["fold_versions"].split(",")) == 5
    x = load_model_input(paths.lake_dir("registered_volumes", "T00"), "dose")[None]
    folds = [load_model(f"models:/rice-net/{v.split(':')[1]}") for v in tags["fold_versions"].split(",")]
    with torch.no_grad():
        fold_mean = float(torch.stack([torch.softmax(m(x), 1)[0, 1] for m in folds]).mean())
    np.save(paths.home / "x.npy", x.numpy())
    code = (
        "import sys, mlflow, numpy as np; "
        f"m = mlflow.pyfunc.load_model({champion_uri()!r}); "
        "print(float(m.predict(np.load(sys.argv[1]))[0]))"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(paths.home / "x.npy")],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        check=True,
    )
    prob = float(fresh.stdout.strip().splitlines()[-1])
    assert 0.0 <= prob <= 1.0 and prob == pytest.approx(fold_mean, abs=1e-6)
    files = paths.home.rglob("*")
    weights = [p for p in files if p.suffix in (".pt", ".pth", ".pkl") and p.stat().st_size > 1e5]
    assert len(weights) == 5, f"each fold network's weights stored once, the champion holds none: {weights}"

    occlusion = materialize(["occlusion_maps"], resources, instance, "T00")
    assert occlusion.success
    reference = nib.load(paths.lake_dir("registered_volumes", "T00") / "dose.nii.gz")
    joint = nib.load(paths.lake_dir("occlusion_maps", "T00") / "occlusion_all.nii.gz")
    assert joint.shape == reference.shape and np.allclose(joint.affine, reference.affine)
    assert (paths.lake_dir("occlusion_maps", "T00") / "overlay.png").stat().st_size > 0

    prediction = materialize(["patient_predictions"], resources, instance, "U00")
    metadata = prediction.asset_materializations_for_node("patient_predictions")[0].metadata
    assert metadata["model"].value == CHAMPION_MODEL and 0 <= metadata["prob_rice"].value <= 1
    (stored,) = catalog.query("SELECT * FROM predictions WHERE scope = 'inference'")
    assert stored["patient_id"] == "U00" and stored["model_version"] == metadata["model_version"].value


def test_patient_predictions_refuses_a_labelled_patient(rice_paths, resources, instance) -> None:
    Catalog(rice_paths.catalog).upsert_patients([PatientRecord("L1", label="rice")])
    instance.add_dynamic_partitions("patients", ["L1"])
    result = materialize(["patient_predictions"], resources, instance, "L1", raise_on_error=False)
    assert not result.success
    assert "patient L1 is labelled" in str(result.all_events)
