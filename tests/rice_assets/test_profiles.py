"""`quick` and `paper` results coexist: lake paths, catalog rows and MLflow names carry the profile."""

import json

import pytest
from mlflow import MlflowClient

from data_catalog import Catalog
from tests.rice_assets.helpers import materialize
from tests.rice_assets.test_training import fake_registered_cohort

CHEAP = {"epochs": 1, "augment": False, "widen_factor": 0.25, "conv1_t_stride": 2, "batch_size": 4}


@pytest.mark.slow
def test_quick_and_paper_coexist(rice_paths, resources, instance) -> None:
    for profile in ("quick", "paper"):
        fake_registered_cohort(rice_paths, n=12, n_test=2, profile=profile)
    catalog = Catalog(rice_paths.catalog)
    assert len(catalog.artifacts("registered_volumes", "T03")) == 8, "one set of volumes per profile"
    versions = {}
    for profile in ("quick", "paper"):
        config = {"profile": profile, **CHEAP}
        materialize(["cv_splits"], resources, instance, run_config={"ops": {"cv_splits": {"config": config}}})
        result = materialize(
            ["fold_models"], resources, instance, "dose|0", {"ops": {"fold_models": {"config": config}}}
        )
        versions[profile] = (
            result.asset_materializations_for_node("fold_models")[0].metadata["experiment_version"].value
        )

    assert versions["quick"] != versions["paper"]
    for profile, version in versions.items():
        document = json.loads(
            (rice_paths.lake_dir("cv_splits", "__all__", profile) / "splits.json").read_text()
        )
        assert document["experiment_version"] == version and document["profile"] == profile
        reference = json.loads(
            (rice_paths.lake_dir("fold_models", "dose|0", profile) / "model.json").read_text()
        )
        assert (
            reference["registered_model"] == f"rice-net-{profile}"
            and reference["experiment_version"] == version
        )
        (cell,) = catalog.artifacts("fold_models", "dose|0", profile=profile)
        assert cell.artifact_id == f"fold_models@{profile}/dose|0/model"
        assert {n.id for n in catalog.ancestors(cell.artifact_id)} >= {
            f"registered_volumes@{profile}/T03/dose"
        }
    rows = catalog.query("SELECT profile, experiment_version, registered_name FROM models ORDER BY profile")
    assert rows == [
        {"profile": "paper", "experiment_version": versions["paper"], "registered_name": "rice-net-paper"},
        {"profile": "quick", "experiment_version": versions["quick"], "registered_name": "rice-net-quick"},
    ]
    assert {r["profile"] for r in catalog.query("SELECT DISTINCT profile FROM splits")} == {"quick", "paper"}
    client = MlflowClient(tracking_uri=resources["mlflow"].tracking_uri)
    for profile in ("quick", "paper"):
        (version,) = client.search_model_versions(f"name='rice-net-{profile}'")
        assert (
            version.tags["profile"] == profile
            and version.tags["rice.experiment_version"] == versions[profile]
        )
        assert client.get_experiment_by_name(f"rice-net-{profile}") is not None
