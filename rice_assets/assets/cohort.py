"""Cohort domain: validate the landing zone, upsert patients, open their partitions, withdraw the
patients cohort.csv no longer lists."""

import hashlib

import dagster as dg

from rice_assets.constants import COHORT_GROUP, PATIENTS_PARTITION, UNLABELLED_PARTITION
from rice_assets.lineage import patient_record, record_outputs
from rice_assets.partitions import sync_partitions
from rice_assets.resources import CatalogResource, RiceHomeResource
from rice_assets.withdrawal import withdraw_patients
from rice_models.landing import Problem, read_cohort_rows, validate_landing, write_manifest


@dg.asset(
    group_name=COHORT_GROUP,
    kinds={"duckdb"},
    description="Validated cohort.csv: valid patients upserted in the catalog and added as `patients` "
    "partitions (the unlabelled ones also as `unlabelled_patients` partitions, what patient_predictions "
    "covers); every problem of the landing zone listed, naming patient and file. A patient cohort.csv "
    "no longer lists is withdrawn: marked in the catalog with the time, its partition and derived files "
    "deleted.",
)
def cohort_manifest(
    context: dg.AssetExecutionContext, rice_home: RiceHomeResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    paths = rice_home.paths
    report = validate_landing(paths.landing)
    for problem in report.problems:
        context.log.warning(str(problem))
    store = catalog.open()
    listed = {row.get("patient_id", "").strip() for row in read_cohort_rows(paths.cohort_csv)[0]}
    partitions = set(context.instance.get_dynamic_partitions(PATIENTS_PARTITION))
    gone = sorted(({p.patient_id for p in store.patients(active_only=True)} | partitions) - listed)
    withdrawn: list[str] = []
    if gone and not listed - {""}:
        context.log.warning(f"cohort.csv lists no patient: not withdrawing {len(gone)} (an editing mistake?)")
    elif gone:
        withdrawn = withdraw_patients(context.instance, catalog, paths, gone)
        context.log.warning(f"withdrawn (no longer in cohort.csv): {', '.join(gone)}")
    store.upsert_patients([patient_record(p) for p in report.patients])
    ids = [p.patient_id for p in report.patients]
    known = set(context.instance.get_dynamic_partitions(PATIENTS_PARTITION))
    new_ids = [pid for pid in ids if pid not in known]
    if new_ids:
        context.instance.add_dynamic_partitions(PATIENTS_PARTITION, new_ids)
    unlabelled = [p.patient_id for p in report.patients if p.label is None]
    sync_partitions(context.instance, UNLABELLED_PARTITION, unlabelled)
    manifest = write_manifest(paths.lake_dir("cohort_manifest") / "manifest.json", report)
    record_outputs(context, catalog, "cohort_manifest", "__all__", {"manifest": manifest}, parents=[])
    return dg.MaterializeResult(
        metadata={
            "patients": len(ids),
            "new_partitions": len(new_ids),
            "rejected_patients": dg.MetadataValue.json(report.rejected_ids()),
            "withdrawn_patients": dg.MetadataValue.json(withdrawn),
            "problems": dg.MetadataValue.md(_problems_markdown(report.problems)),
            "manifest": dg.MetadataValue.path(str(manifest)),
            "unlabelled_patients": len(unlabelled),
        },
        # the same cohort gives the same version, so re-validating an unchanged landing zone leaves
        # what depends on it (cv_splits) up to date
        data_version=dg.DataVersion(hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]),
    )


def _problems_markdown(problems: list[Problem]) -> str:
    if not problems:
        return "No problems: every patient in cohort.csv is valid."
    rows = "\n".join(
        f"| {p.row or ''} | {p.patient_id or ''} | {p.file or ''} | {p.message} |" for p in problems
    )
    return "| line | patient | file | problem |\n|---|---|---|---|\n" + rows
