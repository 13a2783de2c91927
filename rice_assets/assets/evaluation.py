"""Evaluation domain: the study's tables and plots, the champion model, occlusion maps."""

import base64
from pathlib import Path

import dagster as dg
import numpy as np

from data_catalog import Catalog, ParentRef
from rice_assets.assets.training import cv_splits, fold_models, read_splits
from rice_assets.config import ProfileConfig
from rice_assets.constants import EVALUATION_GROUP
from rice_assets.lineage import record_outputs
from rice_assets.partitions import patients_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.channels import channels_of
from rice_models.data import label_index
from rice_models.ensemble import VOTING_METHODS, select_champion
from rice_models.evaluation import (
    Cell,
    TestPatient,
    cell_from_summary,
    evaluate,
    validation_f1,
)
from rice_models.imaging.volume import load_nifti
from rice_models.landing import cohort_kind
from rice_models.occlusion import load_model_input, occlusion_peak, save_occlusion_result
from rice_models.occlusion import occlusion_maps as compute_occlusion_maps
from rice_models.paths import write_text_atomic
from rice_models.plots import plot_ablation, plot_confusion_matrix, plot_occlusion_overlay, plot_roc_curves
from rice_models.registry import load_champion, log_evaluation_run, register_champion
from rice_models.report import ablation_markdown
from rice_models.tables import write_csv

ENSEMBLE_COMBINATION = "postop+event+dose"  # the study's full model: its confusion matrix is plotted


class EvaluationConfig(ProfileConfig):
    """Fold-ensemble voting on the test set (`majority`, the study's vote, or `soft`) and bootstrap size."""

    voting: str = "majority"
    n_boot: int = 2000


@dg.asset(
    group_name=EVALUATION_GROUP,
    deps=[fold_models],
    kinds={"duckdb", "mlflow"},
    description="Per-cell validation metrics, the 7-row ablation table (validation macro F1 mean ± sd, "
    "test-set ensemble macro F1 with a 95% bootstrap interval), per-patient test predictions; CSV and "
    "PNG in the lake, DuckDB tables `ablation`, `metrics`, `predictions`, plots logged to MLflow.",
)
def evaluation_tables(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    if config.voting not in VOTING_METHODS:
        raise dg.Failure(f"voting must be one of {VOTING_METHODS}, got {config.voting!r}")
    profile = config.resolve()
    paths, store = rice_home.paths, catalog.open()
    cells = trained_cells(store, profile.name)
    splits = read_splits(paths)
    tests = [
        TestPatient(p, label_index(splits.labels[p]), paths.lake_dir("registered_volumes", p))
        for p in splits.test
    ]
    result = evaluate(cells, tests, voting=config.voting, n_boot=config.n_boot, seed=profile.split_seed)
    out = paths.lake_dir("evaluation_tables")
    files = {
        "cells": write_csv(out / "cells.csv", result.cells),
        "ablation": write_csv(out / "ablation.csv", result.ablation),
        "predictions": write_csv(out / "test_predictions.csv", result.predictions),
        "ablation_plot": plot_ablation(result.ablation, out / "ablation.png"),
        "roc_plot": plot_roc_curves(result.test_labels, result.test_probability, out / "roc.png"),
    }
    shown = ENSEMBLE_COMBINATION if ENSEMBLE_COMBINATION in result.test_prediction else None
    if shown and result.test_labels:
        files["confusion_plot"] = plot_confusion_matrix(
            result.test_labels, result.test_prediction[shown], out / "confusion.png", f"Test set: {shown}"
        )
    markdown = ablation_markdown(result.ablation, cohort_kind(paths.landing), profile.name)
    files["report"] = write_text_atomic(out / "report.md", markdown)
    _store_tables(store, result.ablation, result.cells, result.predictions)
    parents = [ParentRef.artifact("fold_models", f"{c.combination}|{c.fold}", "model") for c in cells]
    record_outputs(context, catalog, "evaluation_tables", "__all__", files, parents, profile)
    log_evaluation_run(files, tags={"dagster_run_id": context.run_id}, tracking=mlflow.tracking())
    return dg.MaterializeResult(
        metadata={
            "ablation": dg.MetadataValue.md(markdown),
            "n_cells": len(cells),
            "n_test": len(tests),
            "voting": config.voting,
            "ablation_plot": png_markdown(files["ablation_plot"]),
            "roc_plot": png_markdown(files["roc_plot"]),
            "report": dg.MetadataValue.path(str(files["report"])),
        }
    )


@dg.asset(
    group_name=EVALUATION_GROUP,
    deps=[fold_models, cv_splits],
    kinds={"mlflow"},
    description="The combination with the best mean validation macro F1 (the test set never selects): "
    "its fold ensemble registered as `rice-net-champion` under MLflow alias `champion`, loading as one "
    "model that returns the ensemble P(RICE) for a stacked (B, C, D, H, W) input.",
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    profile = config.resolve()
    store = catalog.open()
    cells = trained_cells(store, profile.name)
    combination = select_champion(validation_f1(cells))
    versions = _fold_versions(store, combination)
    example = np.zeros((1, len(channels_of(combination)), *profile.shape), dtype=np.float32)
    logged = register_champion(
        combination=combination,
        fold_versions=versions,
        input_example=example,
        tags={"dagster_run_id": context.run_id, "profile": profile.name},
        tracking=mlflow.tracking(),
    )
    model_id = "champion_model/__all__/ensemble"
    store.replace_rows(
        "models",
        [
            {
                "model_id": model_id,
                "combination": combination,
                "fold": None,
                "mlflow_run_id": logged.run_id,
                "registered_name": logged.registered_model,
                "model_version": str(logged.model_version),
                "alias": "champion",
                "profile": profile.name,
                "metadata": {"fold_versions": versions},
            }
        ],
        where={"model_id": model_id},
    )
    val = validation_f1(cells)[combination]
    return dg.MaterializeResult(
        metadata={
            "combination": combination,
            "val_f1_mean": float(np.mean(val)),
            "model_uri": f"models:/{logged.registered_model}@champion",
            "model_version": logged.model_version,
            "fold_versions": dg.MetadataValue.json(versions),
        }
    )


@dg.asset(
    partitions_def=patients_partitions,
    group_name=EVALUATION_GROUP,
    deps=[champion_model],
    kinds={"nifti", "pytorch"},
    description="Per test patient: MONAI OcclusionSensitivity on the champion's fold ensemble (loaded "
    "by its MLflow alias `champion`), all "
    "channels occluded together (as in the study) plus one map per channel; NIfTI on the grid of "
    "registered_volumes and a PNG overlay (orthogonal slices through the peak, dose contours).",
)
def occlusion_maps(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    pid = context.partition_key
    profile = config.resolve()
    paths, store = rice_home.paths, catalog.open()
    if pid not in read_splits(paths).test:
        raise dg.Failure(f"patient {pid} is not in the test set: occlusion maps are made for test patients")
    ensemble, version = load_champion(mlflow.tracking())
    combination = ensemble.combination
    assert combination is not None
    members = [c for c in trained_cells(store, profile.name) if c.combination == combination]
    volumes = paths.lake_dir("registered_volumes", pid)
    image = load_model_input(volumes, combination)
    result = compute_occlusion_maps(
        ensemble,
        image,
        channels_of(combination),
        mask_size=profile.occlusion_mask_size,
        overlap=profile.occlusion_overlap,
    )
    postop = load_nifti(volumes / "mri_postop.nii.gz")
    out = paths.lake_dir("occlusion_maps", pid)
    files = save_occlusion_result(result, postop.affine, out)
    dose = np.asarray(load_nifti(volumes / "dose.nii.gz").dataobj)
    files["overlay"] = plot_occlusion_overlay(
        result.maps, np.asarray(postop.dataobj), dose, out / "overlay.png", f"{pid}: {combination}"
    )
    parents = [ParentRef.artifact("registered_volumes", pid, ch) for ch in ("mri_postop", "dose")]
    parents += [ParentRef.artifact("fold_models", f"{c.combination}|{c.fold}", "model") for c in members]
    summary = {**result.summary(), "combination": combination, "champion_version": version}
    record_outputs(context, catalog, "occlusion_maps", pid, files, parents, profile, summary)
    return dg.MaterializeResult(
        metadata={
            "combination": combination,
            "champion_version": version,
            "baseline_p_rice": result.baseline,
            "seconds": round(result.seconds, 2),
            "windows_per_map": result.n_windows,
            "peak_voxel": dg.MetadataValue.json(list(occlusion_peak(result.maps["all"]))),
            "overlay": png_markdown(files["overlay"]),
        }
    )


def png_markdown(path: Path) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (Markdown with a data URI), with its path."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{path.name}](data:image/png;base64,{data})\n\n`{path}`")


def trained_cells(store: Catalog, profile: str) -> list[Cell]:
    """The fold models recorded for a profile, with their validation predictions."""
    cells = []
    for artifact in store.artifacts("fold_models"):
        if artifact.profile != profile or artifact.path is None:
            continue
        combination, fold = artifact.partition_key.split("|")
        uri = artifact.metadata.get("model_uri")
        if uri is None:
            raise dg.Failure(
                f"fold model {artifact.partition_key} has no registered model URI (trained by an older "
                "version of rice): re-materialise fold_models"
            )
        cells.append(cell_from_summary(combination, int(fold), uri, artifact.metadata))
    if not cells:
        raise dg.Failure(f"no fold models trained with profile {profile!r}: materialise fold_models first")
    return cells


def _fold_versions(store: Catalog, combination: str) -> dict[str, str]:
    rows = store.query(
        "SELECT fold, model_version FROM models WHERE combination = ? AND fold IS NOT NULL ORDER BY fold",
        [combination],
    )
    return {str(r["fold"]): str(r["model_version"]) for r in rows}


def _store_tables(store: Catalog, ablation: list[dict], cells: list[dict], predictions: list[dict]) -> None:
    store.write_table("ablation", ablation)
    metric_rows = [
        {
            "scope": "cv_val",
            "combination": c["combination"],
            "fold": c["fold"],
            "metric": k,
            "value": v,
            "n": c["n"],
        }
        for c in cells
        for k, v in c.items()
        if k not in ("combination", "fold", "n") and isinstance(v, int | float) and v is not None
    ]
    store.replace_rows("metrics", metric_rows, where={"scope": "cv_val"})
    prediction_rows = [
        {
            "patient_id": p["patient_id"],
            "scope": "test",
            "combination": p["combination"],
            "prob_rice": p["prob"],
            "predicted": "rice" if p["pred"] == 1 else "recurrence",
            "label": None if p["label"] is None else ("rice" if p["label"] == 1 else "recurrence"),
        }
        for p in predictions
    ]
    store.replace_rows("predictions", prediction_rows, where={"scope": "test"})
