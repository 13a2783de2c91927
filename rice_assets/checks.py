"""Asset checks: data-quality gates shown in the Dagster UI, each naming the patient it concerns."""

import json

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest
from rice_assets.resources import RiceHomeResource


@dg.asset_check(asset=cohort_manifest, description="Every cohort.csv row and patient folder is valid.")
def cohort_has_no_problems(rice_home: RiceHomeResource) -> dg.AssetCheckResult:
    manifest = rice_home.paths.lake_dir("cohort_manifest") / "manifest.json"
    problems = json.loads(manifest.read_text())["problems"]
    patients = sorted({p["patient_id"] for p in problems if p["patient_id"]})
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{len(problems)} problem(s); rejected patients: {', '.join(patients) or 'none'}",
        metadata={"problems": dg.MetadataValue.json(problems)},
    )
