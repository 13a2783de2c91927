"""Evaluation domain: the study's tables and plots, the champion model, occlusion maps.

Each works on one profile's current experiment (the one cv_splits declared last) and refuses fold models
of any other: the blocking check `experiment_is_complete` stops them in a run, and each asset checks again
by itself.
"""

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from data_catalog import Catalog, ParentRef
from rice_assets.assets.preprocessing import registered_volumes
from rice_assets.assets.training import cv_splits, fold_models
from rice_assets.config import ProfileConfig
from rice_assets.constants import EVALUATION_GROUP
from rice_assets.experiments import cell_check, evaluation_record, read_experiment, splits_of
from rice_assets.lineage import record_outputs, recorded_model_version, staged, verified_inputs
from rice_assets.partitions import test_patients_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.channels import channels_of
from rice_models.experiment import EXPERIMENT_TAG
from rice_models.imaging.volume import load_nifti
from rice_models.labels import label_index, label_name
from rice_models.landing import cohort_kind
from rice_models.metrics import DEFAULT_THRESHOLD
from rice_models.mlflow_backend import DEFAULT_EXPERIMENT, profile_name
from rice_models.paths import write_text_atomic
from rice_models.process import freeze_imported_objects
from rice_models.tables import write_csv

if TYPE_CHECKING:  # torch, MONAI, MLflow, matplotlib: imported by the steps that use them
    from rice_models.evaluation import Cell, Evaluation

ENSEMBLE_COMBINATION = "postop+event+dose"  # the study's full model: its confusion matrix is plotted
CHAMPION_REFERENCE = "champion.json"


class EvaluationConfig(ProfileConfig):
    """The decision rule of the fold ensembles (voting `majority`, the study's, or `soft`; threshold)
    and the bootstrap size. The champion is registered with the same rule."""

    voting: str = "majority"
    threshold: float = DEFAULT_THRESHOLD
    n_boot: int = 2000


@dg.asset(
    group_name=EVALUATION_GROUP,
    deps=[fold_models, cv_splits],
    kinds={"duckdb", "mlflow"},
    description="For the current experiment only: per-cell validation metrics, the ablation table (the "
    "study's per-fold best-epoch validation macro F1, pooled out-of-fold macro F1 with a 95% bootstrap "
    "interval, test-set ensemble macro F1 by the decision rule with its interval), per-patient test "
    "predictions and the champion choice (pooled out-of-fold F1); CSV and PNG in "
    "`lake/evaluation_tables/<profile>/`, DuckDB tables `ablation`, `metrics`, `predictions` (profile and "
    "experiment version on every row), plots logged to MLflow.",
)
def evaluation_tables(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from rice_assets.html_report import write_report
    from rice_models.ensemble import VOTING_METHODS, DecisionRule
    from rice_models.evaluation import TestPatient, evaluate
    from rice_models.html_report import REPORT_FILE
    from rice_models.plots import plot_ablation, plot_confusion_matrix, plot_roc_curves
    from rice_models.registry import log_evaluation_run
    from rice_models.report import ablation_markdown

    freeze_imported_objects()
    if config.voting not in VOTING_METHODS:
        raise dg.Failure(f"voting must be one of {VOTING_METHODS}, got {config.voting!r}")
    rule = DecisionRule(config.voting, config.threshold)
    profile = config.resolve()
    tracking = mlflow.tracking()  # before loading the fold models: a run's process starts unconfigured
    paths, store = rice_home.paths, catalog.open()
    cells, version = _current_cells(store, rice_home, profile.name)
    splits = splits_of(read_experiment(paths, profile.name))
    tests = [
        TestPatient(p, label_index(splits.labels[p]), paths.lake_dir("registered_volumes", p, profile.name))
        for p in splits.test
    ]
    verified_inputs(store, "registered_volumes", splits.test, profile.name)
    verified_inputs(store, "fold_models", [f"{c.combination}|{c.fold}" for c in cells], profile.name)
    result = evaluate(cells, tests, rule, n_boot=config.n_boot, seed=profile.split_seed)
    cohort = cohort_kind(paths.landing)
    staging = staged(paths, "evaluation_tables", "__all__", profile.name)
    with staging:
        out = staging.dir
        files = {
            "cells": write_csv(out / "cells.csv", result.cells),
            "ablation": write_csv(out / "ablation.csv", result.ablation),
            "predictions": write_csv(out / "test_predictions.csv", result.predictions),
            "ablation_plot": plot_ablation(result.ablation, out / "ablation.png", cohort=cohort),
            "roc_plot": plot_roc_curves(
                result.test_labels, result.test_probability, out / "roc.png", cohort=cohort
            ),
        }
        shown = ENSEMBLE_COMBINATION if ENSEMBLE_COMBINATION in result.test_prediction else None
        if shown and result.test_labels:
            files["confusion_plot"] = plot_confusion_matrix(
                result.test_labels,
                result.test_prediction[shown],
                out / "confusion.png",
                f"Test set: {shown}",
                cohort=cohort,
            )
        markdown = ablation_markdown(result.ablation, cohort, profile.name, version)
        files["report"] = write_text_atomic(out / "report.md", markdown)
        parents = [
            ParentRef.artifact("fold_models", f"{c.combination}|{c.fold}", "model", profile.name)
            for c in cells
        ]
        summary = {
            "experiment_version": version,
            "rule": rule.as_dict(),
            "champion": result.champion,
            "compared": sorted({c.combination for c in cells}),
            "fold_uris": {f"{c.combination}|{c.fold}": c.model_uri for c in cells},
        }
        with store.atomic():  # tables, artifacts and the folder swap: all or nothing
            _store_tables(store, result, profile.name, version)
            # the page reads the tables just stored (the block sees its own writes)
            files["html_report"], content = write_report(
                paths, store, profile.name, out / REPORT_FILE, later_assets=False, tables_dir=out
            )
            for path in content.cohort_summary.qc_figures.values():
                files["qc_plot"] = path
            record_outputs(
                context, store, "evaluation_tables", "__all__", files, parents, profile, summary, staging
            )
    files = {name: staging.path(path) for name, path in files.items()}
    log_evaluation_run(
        files,
        tags={"dagster_run_id": context.run_id, "profile": profile.name, EXPERIMENT_TAG: version},
        tracking=tracking,
        experiment=profile_name(DEFAULT_EXPERIMENT, profile.name),
    )
    return dg.MaterializeResult(
        metadata={
            "experiment_version": version,
            "ablation": dg.MetadataValue.md(markdown),
            "champion": result.champion,
            "n_cells": len(cells),
            "n_test": len(tests),
            "voting": rule.voting,
            "threshold": rule.threshold,
            "ablation_plot": png_markdown(files["ablation_plot"]),
            "roc_plot": png_markdown(files["roc_plot"]),
            "report": dg.MetadataValue.path(str(files["report"])),
            "html_report": dg.MetadataValue.path(str(files["html_report"])),
        },
        data_version=dg.DataVersion(f"{version}:{rule.voting}:{rule.threshold:g}"),
    )


@dg.asset(
    group_name=EVALUATION_GROUP,
    deps=[evaluation_tables, fold_models, cv_splits],
    kinds={"mlflow"},
    description="The combination evaluation_tables chose (best pooled out-of-fold macro F1; the test set "
    "never selects): its fold ensemble with the evaluation's decision rule, registered as "
    "`rice-net-champion-<profile>` under MLflow alias `champion` (tag rice.experiment_version), loading as "
    "one model whose P(RICE) for a stacked (B, C, D, H, W) input is the evaluated one.",
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from rice_models.ensemble import DecisionRule
    from rice_models.registry import (
        champion_model_name,
        promote_champion,
        reconcile_champion,
        register_champion,
    )

    freeze_imported_objects()
    profile = config.resolve()
    store = catalog.open()
    cells, version = _current_cells(store, rice_home, profile.name)
    evaluation = evaluation_record(store, profile.name)
    if evaluation is None or evaluation.metadata.get("experiment_version") != version:
        found = None if evaluation is None else evaluation.metadata.get("experiment_version")
        raise dg.Failure(
            f"profile {profile.name}: the latest evaluation_tables is of experiment {found}, the current "
            f"experiment is {version}: materialise evaluation_tables first"
        )
    combination = str(evaluation.metadata["champion"])
    members = sorted((c for c in cells if c.combination == combination), key=lambda c: c.fold)
    uris = [c.model_uri for c in members]
    if uris != [evaluation.metadata["fold_uris"][f"{c.combination}|{c.fold}"] for c in members]:
        raise dg.Failure(
            f"the {combination} fold models changed since evaluation_tables: evaluate them again"
        )
    rule = DecisionRule(**evaluation.metadata["rule"])
    versions = {str(c.fold): c.model_uri.rsplit("/", 1)[1] for c in members}
    example = np.zeros((1, len(channels_of(combination)), *profile.shape), dtype=np.float32)
    registered = champion_model_name(profile.name)
    model_id = f"champion_model@{profile.name}/__all__/ensemble"
    tracking = mlflow.tracking()
    verified_inputs(store, "evaluation_tables", ["__all__"], profile.name)
    if orphans := reconcile_champion(registered, recorded_model_version(store, model_id), tracking):
        context.log.warning(f"deleted {registered} versions {orphans}: left by a killed run, never recorded")
    logged = register_champion(
        combination=combination,
        fold_uris=uris,
        fold_versions=versions,
        input_example=example,
        tags={"dagster_run_id": context.run_id, "profile": profile.name},
        tracking=tracking,
        registered_model=registered,
        rule=rule,
        experiment_version=version,
        experiment=profile_name(DEFAULT_EXPERIMENT, profile.name),
    )
    reference = {
        "model_uri": f"models:/{registered}/{logged.model_version}",
        "alias_uri": f"models:/{registered}@champion",
        "model_version": logged.model_version,
        "combination": combination,
        "experiment_version": version,
        "rule": rule.as_dict(),
        "fold_versions": versions,
    }
    path = write_text_atomic(
        rice_home.paths.lake_dir("champion_model", "__all__", profile.name) / CHAMPION_REFERENCE,
        json.dumps(reference, indent=2),
    )
    parents = [ParentRef.artifact("evaluation_tables", "__all__", "ablation", profile.name)]
    parents += [
        ParentRef.artifact("fold_models", f"{c.combination}|{c.fold}", "model", profile.name) for c in members
    ]
    with store.atomic():  # the artifact and its models row: one transaction, before the alias moves
        record_outputs(
            context, store, "champion_model", "__all__", {"ensemble": path}, parents, profile, reference
        )
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
                    "artifact_id": model_id,
                    "profile": profile.name,
                    "experiment_version": version,
                    "metadata": {"fold_versions": versions, "rule": rule.as_dict()},
                }
            ],
            where={"model_id": model_id},
        )
    promote_champion(registered, logged.model_version, tracking)  # last: alias follows the catalog
    return dg.MaterializeResult(
        metadata={
            "combination": combination,
            "experiment_version": version,
            "voting": rule.voting,
            "threshold": rule.threshold,
            "model_uri": f"models:/{logged.registered_model}@champion",
            "model_version": logged.model_version,
            "fold_versions": dg.MetadataValue.json(versions),
        },
        data_version=dg.DataVersion(f"{version}:{logged.model_version}"),
    )


@dg.asset(
    partitions_def=test_patients_partitions,
    group_name=EVALUATION_GROUP,
    deps=[champion_model, dg.AssetDep(registered_volumes, partition_mapping=dg.IdentityPartitionMapping())],
    kinds={"nifti", "pytorch"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Per test patient of the current experiment (partitions `test_patients`, kept in step by "
    "cv_splits; made again automatically when the champion or the patient's volumes change): MONAI "
    "OcclusionSensitivity on the champion "
    "(loaded by its MLflow alias `champion`, with its decision rule), all channels occluded together (as "
    "in the study) plus one map per channel; NIfTI on the grid of registered_volumes and a PNG overlay "
    "(orthogonal slices through the peak, dose contours) in `lake/occlusion_maps/<profile>/<patient>/`.",
)
def occlusion_maps(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from rice_models.occlusion import load_model_input, occlusion_peak, save_occlusion_result
    from rice_models.occlusion import occlusion_maps as compute_occlusion_maps
    from rice_models.plots import plot_occlusion_overlay
    from rice_models.registry import champion_model_name, load_champion

    freeze_imported_objects()
    pid = context.partition_key
    profile = config.resolve()
    paths = rice_home.paths
    declared = read_experiment(paths, profile.name)
    if pid not in declared["test"]:
        raise dg.Failure(f"patient {pid} is not in the test set: occlusion maps are made for test patients")
    champion = load_champion(champion_model_name(profile.name), mlflow.tracking())
    if champion.experiment_version != declared["experiment_version"]:
        raise dg.Failure(
            f"the champion belongs to experiment {champion.experiment_version}, the current experiment is "
            f"{declared['experiment_version']}: materialise evaluation_tables and champion_model first"
        )
    ensemble = champion.ensemble
    combination = ensemble.combination
    assert combination is not None
    volumes = paths.lake_dir("registered_volumes", pid, profile.name)
    verified_inputs(catalog, "registered_volumes", [pid], profile.name)
    image = load_model_input(volumes, combination)
    result = compute_occlusion_maps(
        ensemble,
        image,
        channels_of(combination),
        mask_size=profile.occlusion_mask_size,
        overlap=profile.occlusion_overlap,
    )
    postop = load_nifti(volumes / "mri_postop.nii.gz")
    dose = np.asarray(load_nifti(volumes / "dose.nii.gz").dataobj)
    parents = [
        ParentRef.artifact("registered_volumes", pid, ch, profile.name) for ch in ("mri_postop", "dose")
    ]
    parents.append(ParentRef.artifact("champion_model", "__all__", "ensemble", profile.name))
    _, predicted = ensemble.predict(image[None])
    summary = {
        **result.summary(),
        "combination": combination,
        "champion_version": champion.version,
        "experiment_version": champion.experiment_version,
        "rule": ensemble.rule.as_dict(),
        "predicted": label_name(int(predicted[0])),
    }
    with staged(paths, "occlusion_maps", pid, profile.name) as staging:
        files = save_occlusion_result(result, postop.affine, staging.dir)
        files["overlay"] = plot_occlusion_overlay(
            result.maps,
            np.asarray(postop.dataobj),
            dose,
            staging.dir / "overlay.png",
            f"{pid}: occlusion sensitivity of the champion ({combination})",
            affine=postop.affine,
            p_rice=result.baseline,
            predicted=label_name(int(predicted[0])),
            cohort=cohort_kind(paths.landing),
        )
        record_outputs(context, catalog, "occlusion_maps", pid, files, parents, profile, summary, staging)
    files = {name: staging.path(path) for name, path in files.items()}
    return dg.MaterializeResult(
        metadata={
            "combination": combination,
            "champion_version": champion.version,
            "experiment_version": str(champion.experiment_version),
            "voting": ensemble.rule.voting,
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


def _current_cells(store: Catalog, rice_home: RiceHomeResource, profile: str) -> tuple[list["Cell"], str]:
    """The cells of the current experiment, refusing an incomplete or mixed one (defence in depth: the
    blocking check `experiment_is_complete` says the same before these assets run)."""
    check, cells = cell_check(store, rice_home.paths, profile)
    if not check.ok:
        raise dg.Failure(f"profile {profile}: {check.describe()}")
    return cells, check.current


def _store_tables(store: Catalog, result: "Evaluation", profile: str, version: str) -> None:
    """The ablation, per-cell metrics and test predictions of one (profile, experiment version)."""
    key = {"profile": profile, "experiment_version": version}
    store.replace_rows("ablation", result.ablation, where=key)
    metric_rows = [
        {
            "scope": "cv_val",
            "combination": c["combination"],
            "fold": c["fold"],
            "metric": k,
            "value": v,
            "n": c["n"],
        }
        for c in result.cells
        for k, v in c.items()
        if k not in ("combination", "fold", "n") and isinstance(v, int | float) and v is not None
    ]
    metric_rows += [
        {
            "scope": "oof",
            "combination": combination,
            "fold": None,
            "metric": k,
            "value": v,
            "ci_low": m["macro_f1_lo"] if k == "macro_f1" else None,
            "ci_high": m["macro_f1_hi"] if k == "macro_f1" else None,
            "n": m["n"],
        }
        for combination, m in result.oof.items()
        for k, v in m.items()
        if k not in ("n", "macro_f1_lo", "macro_f1_hi") and isinstance(v, int | float) and v is not None
    ]
    store.replace_rows("metrics", metric_rows, where=key)  # both scopes of this experiment
    prediction_rows = [
        {
            "patient_id": p["patient_id"],
            "scope": "test",
            "combination": p["combination"],
            "prob_rice": p["prob"],
            "predicted": label_name(p["pred"]),
            "label": None if p["label"] is None else label_name(p["label"]),
        }
        for p in result.predictions
    ]
    store.replace_rows("predictions", prediction_rows, where={**key, "scope": "test"})
