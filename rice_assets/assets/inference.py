"""Inference domain: the champion's probability of RICE for each unlabelled patient."""

import json

import dagster as dg

from data_catalog import ParentRef
from rice_assets.assets.evaluation import champion_model
from rice_assets.assets.preprocessing import registered_volumes
from rice_assets.config import ProfileConfig
from rice_assets.constants import INFERENCE_GROUP
from rice_assets.lineage import record_outputs
from rice_assets.partitions import patients_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.labels import label_name
from rice_models.occlusion import load_model_input
from rice_models.paths import write_text_atomic
from rice_models.registry import champion_model_name, load_champion


@dg.asset(
    partitions_def=patients_partitions,
    group_name=INFERENCE_GROUP,
    deps=[champion_model, registered_volumes],
    kinds={"pytorch", "mlflow"},
    description="For an unlabelled patient: the champion ensemble's probability of RICE and class by its "
    "decision rule (the one the evaluation used; MLflow alias `champion` of `rice-net-champion-<profile>`), "
    "with the model version and experiment version that made it; catalog table `predictions` (scope "
    "`inference`), `lake/patient_predictions/<profile>/<patient>/prediction.json`.",
)
def patient_predictions(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    pid = context.partition_key
    profile = config.resolve()
    store = catalog.open()
    patient = store.get_patient(pid)
    if patient is None or patient.label is not None or patient.withdrawn is not None:
        raise dg.Failure(
            f"patient {pid} is labelled, withdrawn or unknown: predictions are made for unlabelled patients"
        )
    champion = load_champion(champion_model_name(profile.name), mlflow.tracking())
    ensemble = champion.ensemble
    volumes = rice_home.paths.lake_dir("registered_volumes", pid, profile.name)
    prob, pred = ensemble.predict(load_model_input(volumes, str(ensemble.combination))[None])
    record = {
        "patient_id": pid,
        "prob_rice": float(prob[0]),
        "predicted": label_name(int(pred[0])),
        "combination": ensemble.combination,
        "model": champion_model_name(profile.name),
        "model_version": champion.version,
        "experiment_version": champion.experiment_version,
        "profile": profile.name,
        **ensemble.rule.as_dict(),
    }
    path = rice_home.paths.lake_dir("patient_predictions", pid, profile.name) / "prediction.json"
    write_text_atomic(path, json.dumps(record, indent=2))
    parents = [
        ParentRef.artifact("registered_volumes", pid, "mri_postop", profile.name),
        ParentRef.artifact("champion_model", "__all__", "ensemble", profile.name),
    ]
    record_outputs(
        context, catalog, "patient_predictions", pid, {"prediction": path}, parents, profile, metadata=record
    )
    store.replace_rows(
        "predictions",
        [
            {
                **{k: record[k] for k in ("prob_rice", "predicted", "combination", "model_version")},
                "label": None,
            }
        ],
        where={
            "patient_id": pid,
            "scope": "inference",
            "profile": profile.name,
            "experiment_version": champion.experiment_version,
        },
    )
    return dg.MaterializeResult(metadata={k: v for k, v in record.items() if v is not None})
