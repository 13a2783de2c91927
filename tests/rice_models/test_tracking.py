"""MLflow round trip in a temporary SQLite backend, and two processes logging to it at once."""

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from rice_models.network import build_network
from rice_models.paths import RicePaths
from rice_models.tracking import (
    Tracking,
    configure_mlflow,
    default_tracking,
    load_model,
    log_fold_run,
    registered_uri,
    sqlite_uri,
    using,
)
from rice_models.training import EpochRecord, FoldResult

torch.set_num_threads(min(2, torch.get_num_threads()))

CHANNELS = ("mri_postop", "dose")


def fake_result(seed: int = 0) -> FoldResult:
    """A fold result with seeded random weights and a three-epoch history (epoch 2 not validated)."""
    torch.manual_seed(seed)
    model = build_network(len(CHANNELS), conv1_t_stride=2, widen_factor=0.25).eval()
    history = [EpochRecord(e, 1.0 / e, 0.5 + 0.1 * e, 0.9 / e, 1.0) for e in (1, 3)]
    history.insert(1, EpochRecord(2, 0.5, None, None, 1.0))
    return FoldResult(
        state_dict=model.state_dict(),
        channels=CHANNELS,
        conv1_t_stride=2,
        widen_factor=0.25,
        history=history,
        best_epoch=3,
        device="cpu",
        amp=False,
        seconds=3.0,
        n_train=10,
        val_patient_ids=("A", "B"),
        val_labels=(0, 1),
        val_probabilities=(0.2, 0.8),
    )


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[Tracking]:
    """A fresh SQLite backend; MLflow's global URI is restored after the test."""
    backend = Tracking(sqlite_uri(tmp_path / "mlflow.db"), tmp_path / "mlartifacts")
    with using(backend):
        yield configure_mlflow(backend.tracking_uri, backend.artifact_root)


def test_fold_run_round_trip(tracking: Tracking, tmp_path: Path) -> None:
    result = fake_result()
    example = np.random.default_rng(0).normal(size=(2, 16, 16, 16)).astype(np.float32)
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    logged = log_fold_run(
        result,
        experiment="rice-test",
        combination="postop+dose",
        fold=2,
        params={"profile": "quick", "registered_volumes_artifact_ids": "7,8,9"},
        tags={"dagster_run_id": "run-123"},
        input_example=example,
        tracking=tracking,
    )
    assert logged.model_version == 1
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before  # the user's override is untouched

    client = tracking.client()
    run = client.get_run(logged.run_id)
    assert run.data.params["combination"] == "postop+dose" and run.data.params["fold"] == "2"
    assert run.data.params["registered_volumes_artifact_ids"] == "7,8,9"
    assert run.data.tags["dagster_run_id"] == "run-123"
    f1 = client.get_metric_history(logged.run_id, "val_macro_f1")
    assert [(m.step, round(m.value, 6)) for m in f1] == [(1, 0.6), (3, 0.8)]  # epoch 2 was not validated
    assert len(client.get_metric_history(logged.run_id, "train_loss")) == 3
    assert len(client.get_metric_history(logged.run_id, "val_loss")) == 2
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())

    version = client.get_model_version("rice-net", "1")
    assert version.run_id == logged.run_id
    assert version.tags == {"combination": "postop+dose", "fold": "2", "dagster_run_id": "run-123"}

    x = torch.as_tensor(example[None])
    expected = result.build_model()(x)
    for uri, backend in ((logged.run_id, tracking), (registered_uri(logged.model_version), None)):
        with torch.no_grad():  # None: the URI configure_mlflow set
            assert torch.equal(load_model(uri, tracking=backend)(x), expected.detach())


def test_bad_input_example_and_missing_configuration(tracking: Tracking) -> None:
    with pytest.raises(ValueError, match="input_example"):
        log_fold_run(
            fake_result(),
            combination="postop+dose",
            fold=0,
            input_example=np.zeros((3, 8, 8, 8)),
            tracking=tracking,
        )


def test_default_tracking_lives_in_rice_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = RicePaths(home=tmp_path, landing=tmp_path / "landing")
    tracking = default_tracking(paths)
    assert tracking.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.artifact_root == tmp_path / "mlartifacts"
    assert tracking.lock_path == tmp_path / "mlflow.db.lock"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking(paths).tracking_uri == "http://mlflow:5000"
    assert default_tracking(paths).lock_path is None


WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from pathlib import Path
    from rice_models.tracking import configure_mlflow, log_fold_run, sqlite_uri
    from tests.rice_models.test_tracking import fake_result

    torch.set_num_threads(1)
    home, fold = Path(sys.argv[1]), int(sys.argv[2])
    tracking = configure_mlflow(sqlite_uri(home / "mlflow.db"), home / "mlartifacts")
    log_fold_run(
        fake_result(fold), combination="postop+dose", fold=fold,
        input_example=np.zeros((2, 16, 16, 16), np.float32), tracking=tracking,
    )
    """
)


def test_two_processes_log_to_one_sqlite_backend(tmp_path: Path) -> None:
    """A fresh database: both processes race on its creation, then on their runs and versions."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("MLFLOW_TRACKING_URI", None)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), str(fold)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for fold in (0, 1)
    ]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri(tmp_path / "mlflow.db"))
    versions = client.search_model_versions("name='rice-net'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert sorted(v.tags["fold"] for v in versions) == ["0", "1"]
    runs = client.search_runs([client.get_experiment_by_name("rice-net").experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
