"""Inference domain: the champion's probability of RICE for each unlabelled patient."""

import json

import dagster as dg
import torch

from data_catalog import ParentRef
from rice_assets.assets.evaluation import champion_model
from rice_assets.assets.preprocessing import registered_volumes
from rice_assets.constants import INFERENCE_GROUP
from rice_assets.lineage import record_outputs
from rice_assets.partitions import patients_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.occlusion import load_model_input
from rice_models.paths import write_text_atomic
from rice_models.registry import CHAMPION_MODEL, load_champion

THRESHOLD = 0.5


@dg.asset(
    partitions_def=patients_partitions,
    group_name=INFERENCE_GROUP,
    deps=[champion_model, registered_volumes],
    kinds={"pytorch", "mlflow"},
    description="For an unlabelled patient: the champion ensemble's probability of RICE (MLflow alias "
    "`champion`), the predicted class at 0.5, and the model version that made it; catalog table "
    "`predictions` (scope `inference`).",
)
def patient_predictions(
    context: dg.AssetExecutionContext,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    pid = context.partition_key
    store = catalog.open()
    patient = store.get_patient(pid)
    if patient is None or patient.label is not None:
        raise dg.Failure(
            f"patient {pid} is labelled or unknown: predictions are made for unlabelled patients"
        )
    ensemble, version = load_champion(mlflow.tracking())
    volumes = rice_home.paths.lake_dir("registered_volumes", pid)
    with torch.no_grad():
        prob = float(ensemble(load_model_input(volumes, ensemble.combination)[None]))
    predicted = "rice" if prob >= THRESHOLD else "recurrence"
    record = {
        "patient_id": pid,
        "prob_rice": prob,
        "predicted": predicted,
        "combination": ensemble.combination,
        "model": CHAMPION_MODEL,
        "model_version": version,
    }
    path = rice_home.paths.lake_dir("patient_predictions", pid) / "prediction.json"
    write_text_atomic(path, json.dumps(record, indent=2))
    parents = [ParentRef.artifact("registered_volumes", pid, "mri_postop")]
    record_outputs(
        context, catalog, "patient_predictions", pid, {"prediction": path}, parents, metadata=record
    )
    store.replace_rows(
        "predictions",
        [
            {
                **{k: record[k] for k in ("prob_rice", "predicted", "combination", "model_version")},
                "label": None,
            }
        ],
        where={"patient_id": pid, "scope": "inference"},
    )
    return dg.MaterializeResult(metadata={**record, "threshold": THRESHOLD})
