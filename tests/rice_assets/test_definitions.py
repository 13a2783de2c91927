import dagster as dg

from rice_assets.constants import PATIENTS_PARTITION
from rice_assets.definitions import defs


def test_definitions_load_and_every_job_resolves() -> None:
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    for job in repo.get_all_jobs():
        assert job.name
    assert repo.get_job("ingest_cohort")
    for stage in ("cohort", "preprocessing", "cv_splits", "training", "evaluation", "champion"):
        assert repo.get_job(f"{stage}_stage")
    assert repo.get_job("training_stage").partitions_def is not None


def test_asset_graph_names_and_partitions() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert "cohort_manifest" in keys
    assert defs.resolve_sensor_def("new_patients_sensor")
    assert defs.resolve_schedule_def("nightly_ingest")


def test_dynamic_partitions_are_named_patients() -> None:
    from rice_assets.partitions import patients_partitions

    assert isinstance(patients_partitions, dg.DynamicPartitionsDefinition)
    assert patients_partitions.name == PATIENTS_PARTITION
