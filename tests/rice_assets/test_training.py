"""cv_splits and one fold_models cell through dagster.materialize, with MLflow and the catalog."""

import json

import dagster as dg
import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from mlflow import MlflowClient

from data_catalog import ArtifactRecord, Catalog, PatientRecord
from rice_assets.definitions import ALL_ASSETS
from rice_models.data import make_item
from rice_models.experiment import fold_seed
from rice_models.provenance import sha256_of
from rice_models.tracking import load_model
from rice_models.training import predict_logits
from tests.rice_assets.helpers import materialize

SHAPE = (32, 32, 32)
CELL = "dose|0"
QC_PASSED = {"dose_problems": [], "nonfinite": {"dose": False}, "brain_volume_ok": True, "ncc_ok": True}
"""The QC figures registered_volumes records, all passing (the cv_splits gate reads them)."""


def fake_registered_cohort(
    paths, n: int = 14, n_test: int = 2, n_unlabelled: int = 0, first: int = 0, profile: str = "quick"
) -> None:
    """`registered_volumes` of n labelled patients (`T..` from index `first`, label planted in the dose)
    and n_unlabelled unlabelled ones (`U..`), with their catalog rows."""
    rng = np.random.default_rng(first)
    catalog = Catalog(paths.catalog)
    affine = np.diag([5.0, 5.0, 5.0, 1.0])
    patients = [
        (f"T{i:02d}", ("rice", "recurrence")[i % 2], "test" if i - first < n_test else "dev")
        for i in range(first, first + n)
    ]
    patients += [(f"U{i:02d}", None, "dev") for i in range(n_unlabelled)]
    for i, (pid, label, split) in enumerate(patients):
        catalog.upsert_patients([PatientRecord(pid, label=label, split=split)])
        folder = paths.lake_dir("registered_volumes", pid, profile)
        folder.mkdir(parents=True)
        dose = np.zeros(SHAPE, np.float32)
        dose[8:24, 8:24, 8:24] = 60.0 if (label or ("rice", "recurrence")[i % 2]) == "rice" else 20.0
        volumes = {
            "mri_postop": rng.normal(size=SHAPE).astype(np.float32),
            "mri_event": rng.normal(size=SHAPE).astype(np.float32),
            "dose": dose,
            "brain_mask": np.ones(SHAPE, np.float32),
        }
        records = []
        for name, data in volumes.items():
            nib.save(nib.Nifti1Image(data, affine), folder / f"{name}.nii.gz")
            path = folder / f"{name}.nii.gz"
            records.append(
                ArtifactRecord(
                    name=name, path=str(path), sha256=sha256_of(path), profile=profile, metadata=QC_PASSED
                )
            )
        catalog.record_artifacts("registered_volumes", pid, records)


@pytest.mark.slow
def test_splits_then_one_cell_trains_logs_registers_and_reloads(rice_paths, resources, instance) -> None:
    fake_registered_cohort(rice_paths)
    splits = materialize(["cv_splits"], resources, instance)
    (check,) = splits.get_asset_check_evaluations()
    assert check.passed and check.check_name == "no_leakage"
    catalog = Catalog(rice_paths.catalog)
    assert sorted(catalog.split_patients("test")) == ["T00", "T01"]

    config = {"ops": {"fold_models": {"config": {"epochs": 2, "augment": False}}}}
    result = materialize(["fold_models"], resources, instance, CELL, config)
    metadata = result.asset_materializations_for_node("fold_models")[0].metadata
    run_id, version = metadata["mlflow_run_id"].value, metadata["model_version"].value
    assert metadata["device"].value == "cpu" and metadata["epochs"].value == 2

    experiment = metadata["experiment_version"].value
    assert experiment != metadata["declared_experiment_version"].value, "epochs=2 is not the declared 20"
    assert metadata["fold_seed"].value == fold_seed(0, "dose", 0)

    client = MlflowClient(tracking_uri=resources["mlflow"].tracking_uri)
    run = client.get_run(run_id)
    assert run.data.params["combination"] == "dose" and run.data.params["epochs"] == "2"
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert run.data.tags["rice.experiment_version"] == experiment
    # quick validates every 5th epoch and the last: of 2 epochs, only the last
    assert [m.step for m in client.get_metric_history(run_id, "val_macro_f1")] == [2]
    assert run.data.params["validation_interval"] == "5"
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2]
    model_version = client.get_model_version("rice-net-quick", str(version))
    assert model_version.tags == {
        "combination": "dose", "fold": "0", "profile": "quick", "rice.experiment_version": experiment,
        "dagster_run_id": result.run_id, "rice.committed": "true",
    }  # fmt: skip

    (row,) = catalog.query("SELECT * FROM models")
    assert row["mlflow_run_id"] == run_id and row["model_version"] == str(version)
    assert row["experiment_version"] == experiment and row["profile"] == "quick"
    lineage = {n.id for n in catalog.ancestors(f"fold_models@quick/{CELL}/model")}
    assert "cv_splits@quick/__all__/splits" in lineage and "registered_volumes@quick/T02/dose" in lineage

    reference = json.loads((rice_paths.lake_dir("fold_models", CELL, "quick") / "model.json").read_text())
    assert reference == {
        "model_uri": f"models:/rice-net-quick/{version}",
        "mlflow_run_id": run_id,
        "model_version": version,
        "registered_model": "rice-net-quick",
        "experiment_version": experiment,
    }
    assert not list(rice_paths.lake.rglob("*.pt")), "weights are stored once, in MLflow"
    mlflow.set_tracking_uri(resources["mlflow"].tracking_uri)
    registered = load_model(reference["model_uri"])
    assert registered.conv1.out_channels == 16, "the quick profile's ResNet-18 at widen_factor 0.25"
    (artifact,) = catalog.artifacts("fold_models")
    val_ids = artifact.metadata["val_patient_ids"]
    items = [
        make_item(p, rice_paths.lake_dir("registered_volumes", p, "quick"), "dose", None) for p in val_ids
    ]
    probabilities = torch.softmax(torch.as_tensor(predict_logits(registered, items, "cpu")), 1)[:, 1]
    np.testing.assert_allclose(probabilities.numpy(), artifact.metadata["val_probabilities"], atol=1e-5)

    again = materialize(["fold_models"], resources, instance, CELL, config)
    new_version = again.asset_materializations_for_node("fold_models")[0].metadata["model_version"].value
    assert new_version == version + 1
    assert len(catalog.query("SELECT * FROM models")) == 1, "re-materialising replaces the cell's row"


@pytest.mark.slow
def test_dagster_shows_fold_models_stale_when_the_split_or_the_volumes_change(
    rice_paths, resources, instance
) -> None:
    config = {"epochs": 1, "augment": False}
    fake_registered_cohort(rice_paths, n=12, n_test=2)
    materialize(["cv_splits"], resources, instance, run_config={"ops": {"cv_splits": {"config": config}}})
    materialize(["fold_models"], resources, instance, CELL, {"ops": {"fold_models": {"config": config}}})
    key = dg.AssetKey("fold_models")
    assert get_stale_status_resolver(instance, ALL_ASSETS).get_status(key, CELL) == StaleStatus.FRESH

    again = materialize(
        ["cv_splits"], resources, instance, run_config={"ops": {"cv_splits": {"config": config}}}
    )
    assert again.success  # the same cohort declares the same experiment: the cell stays fresh
    assert get_stale_status_resolver(instance, ALL_ASSETS).get_status(key, CELL) == StaleStatus.FRESH

    fake_registered_cohort(rice_paths, n=2, n_test=0, first=20)  # two new patients' volumes
    materialize(["cv_splits"], resources, instance, run_config={"ops": {"cv_splits": {"config": config}}})
    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    assert resolver.get_status(key, CELL) == StaleStatus.STALE
    assert any("cv_splits" in str(cause.dependency) for cause in resolver.get_stale_causes(key, CELL))
