"""Training domain: cv_splits (the frozen split; declares the experiment) and the 7 x 5 fold_models."""

import json

import dagster as dg
import numpy as np

from data_catalog import ExperimentRecord, ParentRef, SplitMemory, SplitRecord
from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.preprocessing import registered_volumes
from rice_assets.config import TrainingConfig
from rice_assets.constants import GPU_POOL, TEST_PATIENTS_PARTITION, TRAINING_GROUP
from rice_assets.executors import GPU_STEP_K8S_CONFIG, K8S_CONFIG_TAG
from rice_assets.experiments import (
    data_versions,
    preprocessing_records,
    read_experiment,
    splits_of,
    splits_path,
)
from rice_assets.lineage import record_outputs, recorded_model_version, verified_inputs
from rice_assets.partitions import cell_partitions, sync_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.channels import channels_of
from rice_models.experiment import (
    EXPERIMENT_TAG,
    experiment_settings,
    experiment_version,
    fold_seed,
    profile_from_settings,
)
from rice_models.mlflow_backend import DEFAULT_EXPERIMENT, REGISTERED_MODEL, profile_name
from rice_models.paths import RicePaths, write_text_atomic
from rice_models.process import freeze_imported_objects
from rice_models.provenance import SPLIT_MODULES, source_version, training_code_version
from rice_models.qc import gate
from rice_models.splits import FrozenRoles, Splits, frozen_problems, leakage_problems, make_splits

MODEL_REFERENCE = "model.json"
"""A fold model's lake file: the registered version that holds its weights (never a copy of them)."""


@dg.asset(
    group_name=TRAINING_GROUP,
    deps=[cohort_manifest, registered_volumes],
    code_version=source_version(SPLIT_MODULES),
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "no_leakage",
            asset="cv_splits",
            blocking=True,
            description="No patient in two folds' validation sets, in train and val of one fold, or in "
            "both the test set and the development set; no earlier test patient left the test set and no "
            "patient an earlier fold model trained or validated on entered it.",
        )
    ],
    description="The frozen split of this profile and the experiment it declares: earlier test patients "
    "stay, trained-on patients never enter the test set, new labelled patients are assigned on arrival "
    "(cohort.csv `split=test`, else the profile's test share per label; kept as the `test_patients` "
    "partitions of occlusion_maps); only active patients whose "
    "latest preprocessing passed every blocking QC check enter (the others listed with the reason). "
    "Catalog tables `splits` and `experiments`; `lake/cv_splits/<profile>/__all__/splits.json`.",
)
def cv_splits(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    profile = config.resolve()
    paths, store = rice_home.paths, catalog.open()
    patients = store.patients(active_only=True)
    valid = _valid_in_manifest(paths)
    rejected = {
        p.patient_id: "rejected by cohort validation" for p in patients if valid and p.patient_id not in valid
    }
    candidates = [p for p in patients if p.patient_id not in rejected]
    accepted, excluded = gate(
        preprocessing_records(store, profile.name, [p.patient_id for p in candidates]), profile.name
    )
    excluded.update(rejected)
    rows = [
        (p.patient_id, p.label, p.split if p.split == "test" else None)
        for p in candidates
        if p.patient_id in accepted
    ]
    memory = store.split_memory(profile.name)
    frozen = FrozenRoles(memory.test, memory.development, memory.test_generated)
    splits = make_splits(rows, profile.n_folds, profile.test_fraction, profile.split_seed, frozen=frozen)
    used = sorted({*splits.test, *splits.development})
    data = data_versions(store, profile.name, used)
    settings = experiment_settings(profile)
    code = training_code_version()
    version = experiment_version(settings, splits, data, code)
    document = {
        **splits.as_dict(),
        "profile": profile.name,
        "experiment_version": version,
        "settings": settings,
        "code_version": code,
        "data_versions": data,
        "excluded": excluded,
    }
    path = write_text_atomic(splits_path(paths, profile.name), json.dumps(document, indent=2))
    parents = [ParentRef.artifact("registered_volumes", pid, "dose", profile.name) for pid in used]
    summary = {"experiment_version": version, "excluded": excluded, "test_generated": splits.test_generated}
    with store.atomic():  # artifact, split rows and experiment: one transaction
        record_outputs(context, store, "cv_splits", "__all__", {"splits": path}, parents, profile, summary)
        aid = f"cv_splits@{profile.name}/__all__/splits"
        store.replace_splits(
            _split_records(splits), profile=profile.name, experiment_version=version, artifact_id=aid
        )
        store.record_experiment(
            ExperimentRecord(
                version,
                profile.name,
                settings,
                code,
                data,
                splits.test_generated,
                len(splits.test),
                len(splits.development),
                excluded,
                aid,
            )  # fmt: skip
        )
    sync_partitions(context.instance, TEST_PATIENTS_PARTITION, splits.test)  # what occlusion_maps covers
    problems = leakage_problems(splits) + frozen_problems(splits, frozen)
    return dg.MaterializeResult(
        metadata={
            "experiment_version": version,
            "profile": profile.name,
            "n_test": len(splits.test),
            "n_development": len(splits.development),
            "n_unlabelled": len(splits.unlabelled),
            "test_generated": splits.test_generated,
            "fold_sizes": dg.MetadataValue.json([len(f.val) for f in splits.folds]),
            "excluded": dg.MetadataValue.md(_excluded_markdown(excluded)),
            "n_excluded": len(excluded),
            "frozen": dg.MetadataValue.json(_memory_summary(memory)),
            "notes": dg.MetadataValue.json(list(splits.notes)),
        },
        data_version=dg.DataVersion(version),
        check_results=[
            dg.AssetCheckResult(
                check_name="no_leakage",
                passed=not problems,
                description="; ".join(problems) or "no patient leaks; the frozen test set is kept",
            )
        ],
    )


@dg.asset(
    partitions_def=cell_partitions,
    group_name=TRAINING_GROUP,
    deps=[cv_splits],
    pool=GPU_POOL,
    op_tags={K8S_CONFIG_TAG: GPU_STEP_K8S_CONFIG},  # on Kubernetes: one GPU for the cell's pod
    code_version=training_code_version(),
    kinds={"pytorch", "mlflow"},
    description="One MONAI 3D ResNet-18 per (combination, fold) cell of the experiment cv_splits declared, "
    "trained on the fold's training patients for the profile's fixed epoch count (last epoch kept) with "
    "a seed derived from (seed, combination, fold); logged to MLflow (experiment rice-net-<profile>, tag "
    "rice.experiment_version) and registered as a version of `rice-net-<profile>`, which holds the "
    "weights once; the lake keeps `model.json`, a reference to that version. Runs in pool `gpu`.",
)
def fold_models(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    # torch, MONAI and MLflow load in the training step only, not in every run process (the definitions)
    from rice_models.data import make_item
    from rice_models.progress import EpochProgress
    from rice_models.tracking import log_fold_run, mark_committed, reconcile_versions, registered_uri
    from rice_models.training import train_fold

    freeze_imported_objects()

    key = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    combination, fold = key["combination"], key["fold"]
    paths = rice_home.paths
    declared = read_experiment(paths, config.resolve().name)
    profile = profile_from_settings(declared["settings"], **config.overrides())
    splits = splits_of(declared)
    version = experiment_version(
        experiment_settings(profile), splits, declared["data_versions"], training_code_version()
    )
    if version != declared["experiment_version"]:
        context.log.warning(
            f"cell {combination}|{fold} trains experiment {version}, not the declared "
            f"{declared['experiment_version']} (run config or code differs from cv_splits'): evaluation will "
            "refuse it until cv_splits declares the same experiment"
        )
    cell = splits.fold(fold)
    volumes = {p: paths.lake_dir("registered_volumes", p, profile.name) for p in cell.train + cell.val}
    seed = fold_seed(profile.train_seed, combination, fold)
    verified_inputs(catalog, "cv_splits", ["__all__"], profile.name)
    verified_inputs(catalog, "registered_volumes", volumes, profile.name, channels_of(combination))
    registered = profile_name(REGISTERED_MODEL, profile.name)
    model_id = f"fold_models@{profile.name}/{context.partition_key}/model"
    tracking = mlflow.tracking()
    orphans = reconcile_versions(
        registered,
        {"combination": combination, "fold": str(fold)},
        [recorded_model_version(catalog, model_id)],
        tracking,
    )
    if orphans:
        context.log.warning(
            f"deleted model versions {orphans} of {registered}: left by a killed run, never recorded"
        )

    def items(pids: tuple[str, ...]) -> list[dict]:
        return [make_item(p, volumes[p], combination, splits.labels[p]) for p in pids]

    result = train_fold(
        items(cell.train),
        items(cell.val),
        profile,
        on_epoch=EpochProgress(profile.epochs, context.log.info, f"cell {combination}|{fold}"),
        seed=seed,
    )
    tags = {"dagster_run_id": context.run_id, "profile": profile.name, EXPERIMENT_TAG: version}
    logged = log_fold_run(
        result,
        experiment=profile_name(DEFAULT_EXPERIMENT, profile.name),
        combination=combination,
        fold=fold,
        params={
            **profile.as_dict(),
            "profile": profile.name,
            "fold_seed": seed,
            "experiment_version": version,
        },
        tags=tags,
        version_tags={EXPERIMENT_TAG: version, "profile": profile.name},
        input_example=np.zeros((len(result.channels), *profile.shape), dtype=np.float32),
        registered_model=registered,
        tracking=tracking,
    )
    partition = context.partition_key
    uri = registered_uri(logged.model_version, registered)
    reference = {
        "model_uri": uri,
        "mlflow_run_id": logged.run_id,
        "model_version": logged.model_version,
        "registered_model": registered,
        "experiment_version": version,
    }
    path = write_text_atomic(
        paths.lake_dir("fold_models", partition, profile.name) / MODEL_REFERENCE,
        json.dumps(reference, indent=2),
    )
    parents = [ParentRef.artifact("cv_splits", "__all__", "splits", profile.name)]
    parents += [
        ParentRef.artifact("registered_volumes", p, ch, profile.name)
        for p in volumes
        for ch in channels_of(combination)
    ]
    summary = {**result.summary(), **reference, "fold_seed": seed}
    with catalog.open().atomic() as store:  # the artifact and its models row: one transaction
        record_outputs(context, store, "fold_models", partition, {"model": path}, parents, profile, summary)
        store.replace_rows(
            "models",
            [
                {
                    "model_id": model_id,
                    "combination": combination,
                    "fold": int(fold),
                    "mlflow_run_id": logged.run_id,
                    "registered_name": registered,
                    "model_version": str(logged.model_version),
                    "artifact_id": model_id,
                    "profile": profile.name,
                    "experiment_version": version,
                }
            ],
            where={"model_id": model_id},
        )
    mark_committed(registered, logged.model_version, tracking)  # last: the catalog holds the version
    return dg.MaterializeResult(
        metadata={
            "experiment_version": version,
            "declared_experiment_version": declared["experiment_version"],
            "best_val_macro_f1": result.best.val_macro_f1,
            "best_epoch": result.best_epoch,
            "kept_epoch_val_macro_f1": result.final.val_macro_f1,
            "epochs": len(result.history),
            "fold_seed": seed,
            "device": result.device,
            "seconds": round(result.seconds, 1),
            "mlflow_run_id": logged.run_id,
            "model_version": logged.model_version,
            "model_uri": uri,
            "n_train": result.n_train,
            "n_val": len(result.val_labels),
        },
        data_version=dg.DataVersion(version),
    )


def _valid_in_manifest(paths: RicePaths) -> set[str]:
    """The patients the latest cohort_manifest found valid (empty when it has not run)."""
    manifest = paths.lake_dir("cohort_manifest") / "manifest.json"
    if not manifest.is_file():
        return set()
    return {p["patient_id"] for p in json.loads(manifest.read_text())["patients"]}


def _split_records(splits: Splits) -> list[SplitRecord]:
    common = {"seed": splits.seed, "n_folds": splits.n_folds}
    records = [SplitRecord(pid, "test", None, **common) for pid in splits.test]
    for fold in splits.folds:
        records += [SplitRecord(pid, "train", fold.index, **common) for pid in fold.train]
        records += [SplitRecord(pid, "val", fold.index, **common) for pid in fold.val]
    return records


def _excluded_markdown(excluded: dict[str, str]) -> str:
    if not excluded:
        return "No patient excluded: every active patient passed its blocking QC checks."
    rows = "\n".join(f"| {pid} | {reason} |" for pid, reason in sorted(excluded.items()))
    return "| patient | why it is not in the experiment |\n|---|---|\n" + rows


def _memory_summary(memory: SplitMemory) -> dict:
    return {
        "earlier_test": len(memory.test),
        "earlier_development": len(memory.development),
        "last_reset": memory.reset_at.isoformat() if memory.reset_at else None,
    }
