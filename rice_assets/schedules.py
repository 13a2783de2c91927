"""Schedules: a nightly pass over the landing zone, for sites where the sensor daemon is off."""

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest

ingest_job = dg.define_asset_job(
    "ingest_cohort", selection=[cohort_manifest], description="Validate the landing zone, open partitions"
)

nightly_ingest = dg.ScheduleDefinition(
    job=ingest_job,
    name="nightly_ingest",
    cron_schedule="0 2 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly: re-validate the landing zone and pick up new patients.",
)
