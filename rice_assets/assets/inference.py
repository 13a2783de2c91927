"""Inference domain: the champion's probability of RICE for each unlabelled patient, with its report."""

import dagster as dg

from data_catalog import ParentRef
from rice_assets.assets.evaluation import champion_model, png_markdown
from rice_assets.assets.preprocessing import registered_volumes
from rice_assets.config import ProfileConfig
from rice_assets.constants import INFERENCE_GROUP
from rice_assets.lineage import record_outputs
from rice_assets.partitions import unlabelled_partitions
from rice_assets.resources import CatalogResource, MlflowResource, RiceHomeResource
from rice_models.process import freeze_imported_objects


@dg.asset(
    partitions_def=unlabelled_partitions,
    group_name=INFERENCE_GROUP,
    deps=[champion_model, dg.AssetDep(registered_volumes, partition_mapping=dg.IdentityPartitionMapping())],
    kinds={"pytorch", "mlflow"},
    automation_condition=dg.AutomationCondition.eager(),
    description="For an unlabelled patient (partitions `unlabelled_patients`, kept in step by "
    "cohort_manifest "
    "and the landing-zone sensor): the champion ensemble's probability of RICE and class by its decision "
    "rule (the one the evaluation used; MLflow alias `champion` of `rice-net-champion-<profile>`), with the "
    "model version and experiment version that made it, and the patient's report (Markdown and an "
    "occlusion overlay PNG); catalog table `predictions` (scope `inference`), "
    "`lake/patient_predictions/<profile>/<patient>/{prediction.json,report.md,overlay.png}`. Made "
    "automatically once the patient's volumes exist, and again when they or the champion change "
    "(`rice predict` gives the same probability for the same folder).",
)
def patient_predictions(
    context: dg.AssetExecutionContext,
    config: ProfileConfig,
    rice_home: RiceHomeResource,
    catalog: CatalogResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    # torch, MONAI and MLflow load in this step only, not in every run process (the definitions)
    from rice_models.patient_report import predict_patient, write_patient_report
    from rice_models.registry import champion_model_name, load_champion

    freeze_imported_objects()
    pid = context.partition_key
    profile = config.resolve()
    store = catalog.open()
    patient = store.get_patient(pid)
    if patient is None or patient.label is not None or patient.withdrawn is not None:
        raise dg.Failure(
            f"patient {pid} is labelled, withdrawn or unknown: predictions are made for unlabelled patients"
        )
    model = champion_model_name(profile.name)
    champion = load_champion(model, mlflow.tracking())
    volumes = rice_home.paths.lake_dir("registered_volumes", pid, profile.name)
    prediction = predict_patient(champion, model, volumes, pid, profile.name)
    out = rice_home.paths.lake_dir("patient_predictions", pid, profile.name)
    files = write_patient_report(prediction, champion, volumes, out, profile)
    record = {
        **prediction.as_dict(),
        "prob_rice": prediction.probability_rice,
        **prediction.rule,
    }
    parents = [
        ParentRef.artifact("registered_volumes", pid, "mri_postop", profile.name),
        ParentRef.artifact("champion_model", "__all__", "ensemble", profile.name),
    ]
    record_outputs(context, catalog, "patient_predictions", pid, files, parents, profile, metadata=record)
    store.replace_rows(
        "predictions",
        [
            {
                "prob_rice": prediction.probability_rice,
                "predicted": prediction.predicted,
                "combination": prediction.combination,
                "model_version": prediction.model_version,
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
    metadata = {k: v for k, v in record.items() if v is not None and k != "rule"}
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "report": dg.MetadataValue.path(str(files["report"])),
            "overlay": png_markdown(files["overlay"]),
        }
    )
