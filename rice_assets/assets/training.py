"""Training domain: cv_splits (patient-level folds + test set) and the 7 x 5 fold_models."""

import json
from collections.abc import Callable

import dagster as dg
import numpy as np

from data_catalog import ParentRef, SplitRecord
from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.preprocessing import registered_volumes
from rice_assets.config import ProfileConfig, TrainingConfig
from rice_assets.constants import GPU_POOL, TRAINING_GROUP
from rice_assets.lineage import record_outputs
from rice_assets.partitions import cell_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.channels import channels_of
from rice_models.data import make_item
from rice_models.paths import RicePaths, write_text_atomic
from rice_models.splits import Splits, leakage_problems, make_splits
from rice_models.tracking import REGISTERED_MODEL, log_fold_run, registered_uri
from rice_models.training import EpochRecord, train_fold

SPLITS_FILE = "splits.json"
MODEL_REFERENCE = "model.json"
"""A fold model's lake file: the registered version that holds its weights (never a copy of them)."""


@dg.asset(
    group_name=TRAINING_GROUP,
    deps=[cohort_manifest, registered_volumes],
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "no_leakage",
            asset="cv_splits",
            blocking=True,
            description="No patient in two folds' validation sets, in train and val of one fold, "
            "or in both the test set and the development set.",
        )
    ],
    description="Patient-level, label-stratified folds of the development set plus the independent "
    "test set (cohort.csv `split=test`, else a seeded stratified hold-out), over the patients whose "
    "registered_volumes exist for this profile; written to the catalog table `splits`.",
)
def cv_splits(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    profile = config.resolve()
    store = catalog.open()
    ready = {
        a.partition_key
        for a in store.artifacts("registered_volumes")
        if a.name == "dose" and a.profile == profile.name
    }
    rows = [
        (p.patient_id, p.label, p.split if p.split == "test" else None)
        for p in store.patients()
        if p.patient_id in ready
    ]
    splits = make_splits(rows, profile.n_folds, profile.test_fraction, profile.split_seed)
    path = rice_home.paths.lake_dir("cv_splits") / SPLITS_FILE
    write_text_atomic(path, json.dumps(splits.as_dict(), indent=2))
    parents = [ParentRef.artifact("registered_volumes", pid, "dose") for pid in sorted(ready)]
    record_outputs(context, catalog, "cv_splits", "__all__", {"splits": path}, parents, profile)
    store.replace_splits(_split_records(splits), artifact_id="cv_splits/__all__/splits")
    problems = leakage_problems(splits)
    return dg.MaterializeResult(
        metadata={
            "n_test": len(splits.test),
            "n_development": len(splits.development),
            "n_unlabelled": len(splits.unlabelled),
            "test_generated": splits.test_generated,
            "fold_sizes": dg.MetadataValue.json([len(f.val) for f in splits.folds]),
            "notes": dg.MetadataValue.json(list(splits.notes)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_leakage",
                passed=not problems,
                description="; ".join(problems) or "no patient leaks between test, folds, train and val",
            )
        ],
    )


@dg.asset(
    partitions_def=cell_partitions,
    group_name=TRAINING_GROUP,
    deps=[cv_splits],
    pool=GPU_POOL,
    kinds={"pytorch", "mlflow"},
    description="One MONAI 3D ResNet-18 per (combination, fold) cell, trained on the fold's training "
    "patients and selected on its validation macro F1; logged to MLflow and registered as a version "
    "of `rice-net` (tags combination, fold), whose artifact store holds the weights once; the lake keeps "
    "`model.json`, a reference to that version. Runs in pool `gpu`.",
)
def fold_models(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    key = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    combination, fold = key["combination"], key["fold"]
    profile = config.resolve()
    paths = rice_home.paths
    splits = read_splits(paths)
    cell = splits.fold(fold)

    def items(pids: tuple[str, ...]) -> list[dict]:
        return [
            make_item(p, paths.lake_dir("registered_volumes", p), combination, splits.labels[p]) for p in pids
        ]

    result = train_fold(items(cell.train), items(cell.val), profile, on_epoch=_epoch_logger(context))
    volume_ids = [
        f"registered_volumes/{p}/{ch}" for p in cell.train + cell.val for ch in channels_of(combination)
    ]
    logged = log_fold_run(
        result,
        combination=combination,
        fold=fold,
        params={"profile": profile.name, **profile.as_dict(), "cv_splits": "cv_splits/__all__/splits"},
        tags={"dagster_run_id": context.run_id, "profile": profile.name},
        input_example=np.zeros((len(result.channels), *profile.shape), dtype=np.float32),
        tracking=mlflow.tracking(),
    )
    partition = context.partition_key
    uri = registered_uri(logged.model_version)
    reference = {"model_uri": uri, "mlflow_run_id": logged.run_id, "model_version": logged.model_version}
    path = write_text_atomic(
        paths.lake_dir("fold_models", partition) / MODEL_REFERENCE, json.dumps(reference, indent=2)
    )
    parents = [ParentRef.artifact("cv_splits", "__all__", "splits")]
    parents += [ParentRef.artifact(*vid.split("/", 2)) for vid in volume_ids]
    summary = {**result.summary(), **reference}
    record_outputs(context, catalog, "fold_models", partition, {"model": path}, parents, profile, summary)
    model_id = f"fold_models/{partition}/model"
    catalog.open().replace_rows(
        "models",
        [_model_row(model_id, combination, int(fold), logged.run_id, logged.model_version, profile.name)],
        where={"model_id": model_id},
    )
    return dg.MaterializeResult(
        metadata={
            "best_val_macro_f1": result.best.val_macro_f1,
            "best_epoch": result.best_epoch,
            "epochs": len(result.history),
            "device": result.device,
            "seconds": round(result.seconds, 1),
            "mlflow_run_id": logged.run_id,
            "model_version": logged.model_version,
            "model_uri": uri,
            "n_train": result.n_train,
            "n_val": len(result.val_labels),
        }
    )


def read_splits(paths: RicePaths) -> Splits:
    """The splits `cv_splits` wrote."""
    return Splits.from_dict(json.loads((paths.lake_dir("cv_splits") / SPLITS_FILE).read_text()))


def _split_records(splits: Splits) -> list[SplitRecord]:
    common = {"seed": splits.seed, "n_folds": splits.n_folds}
    records = [SplitRecord(pid, "test", None, **common) for pid in splits.test]
    for fold in splits.folds:
        records += [SplitRecord(pid, "train", fold.index, **common) for pid in fold.train]
        records += [SplitRecord(pid, "val", fold.index, **common) for pid in fold.val]
    return records


def _epoch_logger(context: dg.AssetExecutionContext) -> Callable[[EpochRecord], None]:
    def log(record: EpochRecord) -> None:
        context.log.info(
            f"epoch {record.epoch}: train loss {record.train_loss:.4f}, "
            f"val macro F1 {record.val_macro_f1:.3f}, val loss {record.val_loss:.4f} ({record.seconds:.1f} s)"
        )

    return log


def _model_row(model_id: str, combination: str, fold: int, run_id: str, version: int, profile: str) -> dict:
    return {
        "model_id": model_id,
        "combination": combination,
        "fold": fold,
        "mlflow_run_id": run_id,
        "registered_name": REGISTERED_MODEL,
        "model_version": str(version),
        "artifact_id": model_id,
        "profile": profile,
    }
