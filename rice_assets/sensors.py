"""Sensors: new patients in the landing zone become partitions without anyone clicking."""

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.preprocessing import dose_maps, raw_scans, registered_volumes
from rice_assets.constants import PATIENTS_PARTITION
from rice_assets.partitions import patients_partitions
from rice_assets.resources import RiceHomeResource
from rice_models.landing import LandingError, read_cohort_rows, validate_landing

PREPROCESS_KEYS = [raw_scans.key, dose_maps.key, registered_volumes.key]


@dg.sensor(
    target=[cohort_manifest, raw_scans, dose_maps, registered_volumes],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a `patients` partition for every landing-zone patient that passes validation "
    "and is not yet known, re-materialises cohort_manifest, and preprocesses each new patient; when a known "
    "patient left cohort.csv, re-materialises cohort_manifest, which withdraws it.",
)
def new_patients_sensor(context: dg.SensorEvaluationContext, rice_home: RiceHomeResource) -> dg.SensorResult:
    try:
        report = validate_landing(rice_home.paths.landing)
    except LandingError as err:
        return dg.SensorResult(skip_reason=f"landing zone unusable: {err}")
    known = set(context.instance.get_dynamic_partitions(PATIENTS_PARTITION))
    new_ids = sorted(p.patient_id for p in report.patients if p.patient_id not in known)
    listed = {row.get("patient_id", "").strip() for row in read_cohort_rows(rice_home.paths.cohort_csv)[0]}
    gone = sorted(known - listed)
    if gone and not new_ids:
        context.log.info(f"patients no longer in cohort.csv: {', '.join(gone)}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"withdrawn:{','.join(gone)}", asset_selection=[cohort_manifest.key])
            ]
        )
    if not new_ids:
        return dg.SensorResult(skip_reason="no new valid patients")
    context.log.info(f"new patients: {', '.join(new_ids)}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"new-patients:{','.join(new_ids)}", asset_selection=[cohort_manifest.key]),
            *(
                dg.RunRequest(run_key=f"preprocess:{pid}", partition_key=pid, asset_selection=PREPROCESS_KEYS)
                for pid in new_ids
            ),
        ],
        dynamic_partitions_requests=[patients_partitions.build_add_request(new_ids)],
    )
