"""Sensors: the landing zone watched without anyone clicking, and the declarative automation evaluated.

`landing_zone_sensor` (every `minimum_interval_seconds`) looks at each patient cohort.csv lists:

- a folder whose files changed within the settle time (`RICE_SETTLE_SECONDS`, default 60 s) is still being
  copied and is left alone;
- a settled folder whose files or row are new or changed is validated: a valid new patient becomes a
  `patients` partition (and an `unlabelled_patients` one without a label), its input version is observed on
  `landing_scans`, and its preprocessing is requested; a known patient with a new input version (another
  checksum) is observed and preprocessed again, which makes everything made from it stale;
- an invalid folder is reported once, with the reasons, and looked at again only when it or its row changes;
- patients cohort.csv no longer lists, or a changed cohort.csv (e.g. a new label), re-run cohort_manifest.

`rice_automation` evaluates the assets' automation conditions: `patient_predictions` and `occlusion_maps`
are made as soon as a patient's volumes exist and again when they or the champion change.
"""

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping

import dagster as dg

from rice_assets.assets.cohort import cohort_manifest
from rice_assets.assets.landing import latest_version, observations
from rice_assets.assets.preprocessing import dose_maps, raw_scans, registered_volumes
from rice_assets.constants import PATIENTS_PARTITION
from rice_assets.partitions import patients_partitions, unlabelled_partitions
from rice_assets.resources import RiceHomeResource
from rice_models.arrival import folder_state, input_version
from rice_models.landing import LandingError, read_cohort_rows, validate_landing
from rice_models.paths import RicePaths

PREPROCESS_KEYS = [raw_scans.key, dose_maps.key, registered_volumes.key]
DEFAULT_SETTLE_SECONDS = 60.0
COHORT_CURSOR = "__cohort_csv__"


def settle_seconds() -> float:
    """Seconds a patient folder must stay unchanged before it is taken (`RICE_SETTLE_SECONDS`, default 60)."""
    return float(os.environ.get("RICE_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS))


@dataclasses.dataclass
class LandingScan:
    """What one look at the landing zone found (patient ids sorted in each list).

    Attributes:
        new: valid patients not yet known, with their input versions.
        changed: known patients whose input version differs from the one last observed.
        adopted: known patients never observed (a RICE_HOME from before `landing_scans`): observed
            now, not preprocessed again.
        rejected: patients found invalid now (each reported once), with the reasons.
        pending: folders still being copied (changed within the settle time).
        gone: known patients cohort.csv no longer lists.
        cohort_changed: cohort.csv differs from the last look.
        cursor: the sensor's new cursor (per patient: folder+row signature, rejection reason).
    """

    new: dict[str, str] = dataclasses.field(default_factory=dict)
    changed: dict[str, str] = dataclasses.field(default_factory=dict)
    adopted: dict[str, str] = dataclasses.field(default_factory=dict)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)
    pending: list[str] = dataclasses.field(default_factory=list)
    gone: list[str] = dataclasses.field(default_factory=list)
    cohort_changed: bool = False
    unlabelled: set[str] = dataclasses.field(default_factory=set)
    cursor: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=dict)

    @property
    def news(self) -> bool:
        return bool(self.new or self.changed or self.gone or self.cohort_changed)


def scan_landing(
    paths: RicePaths,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Mapping[str, str | None]],
    settle: float,
    now: float | None = None,
) -> LandingScan:
    """Compare the landing zone with the cursor and the instance (known partitions, observed versions).

    Raises:
        LandingError: the landing zone is unusable (no cohort.csv, missing columns).
    """
    now = time.time() if now is None else now
    rows, _ = read_cohort_rows(paths.cohort_csv)
    by_id = {(row.get("patient_id") or "").strip(): row for row in rows}
    by_id.pop("", None)
    known = set(instance.get_dynamic_partitions(PATIENTS_PARTITION))
    scan = LandingScan(cursor={k: dict(v) for k, v in cursor.items()})
    csv_sig = hashlib.sha256(paths.cohort_csv.read_bytes()).hexdigest()[:16]
    previous_csv = cursor.get(COHORT_CURSOR, {}).get("sig")
    scan.cohort_changed = previous_csv is not None and previous_csv != csv_sig
    scan.cursor[COHORT_CURSOR] = {"sig": csv_sig}
    scan.gone = sorted(known - set(by_id))
    candidates: dict[str, str] = {}
    for pid, row in sorted(by_id.items()):
        state = folder_state(paths.landing / pid)
        if state.n_files and not state.settled(settle, now):
            scan.pending.append(pid)
            continue
        row_sig = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:8]
        signature = f"{state.signature}:{row_sig}"
        if cursor.get(pid, {}).get("sig") != signature:
            candidates[pid] = signature
    if not candidates:
        return scan
    report = validate_landing(paths.landing)
    valid = {p.patient_id: p for p in report.patients}
    for pid, signature in candidates.items():
        if pid not in valid:
            reasons = "; ".join(str(p) for p in report.problems if p.patient_id == pid) or "not valid"
            scan.rejected[pid] = reasons
            scan.cursor[pid] = {"sig": signature, "rejected": reasons}
            continue
        scan.cursor[pid] = {"sig": signature, "rejected": None}
        version = input_version(paths.landing / pid, by_id[pid])
        if pid not in known:
            scan.new[pid] = version
            if valid[pid].label is None:
                scan.unlabelled.add(pid)
        elif (latest := latest_version(instance, pid)) is None:
            scan.adopted[pid] = version
        elif latest != version:
            scan.changed[pid] = version
    return scan


def _preprocess(pid: str, version: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"preprocess:{pid}:{version}",
        partition_key=pid,
        asset_selection=PREPROCESS_KEYS,
        tags={"rice/trigger": "landing_zone_sensor"},
    )


@dg.sensor(
    target=[cohort_manifest, raw_scans, dose_maps, registered_volumes],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the landing zone: a new patient folder with its cohort.csv row is taken once its "
    "files stayed unchanged for RICE_SETTLE_SECONDS (default 60): validated, opened as a partition, its "
    "input version observed on landing_scans and its preprocessing requested; a known patient whose files "
    "changed (new checksum) is preprocessed again; an invalid folder is reported once with the reasons and "
    "retried when it changes; a patient removed from cohort.csv is withdrawn by cohort_manifest.",
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, rice_home: RiceHomeResource) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    try:
        scan = scan_landing(rice_home.paths, context.instance, cursor, settle_seconds())
    except LandingError as err:
        return dg.SensorResult(skip_reason=f"landing zone unusable: {err}")
    new_cursor = json.dumps(scan.cursor, sort_keys=True)
    rejected = [f"patient {pid} rejected: {reason}" for pid, reason in sorted(scan.rejected.items())]
    for line in rejected:
        context.log.warning(line + " (retried when its folder or cohort.csv row changes)")
    if not scan.news:
        waiting = f"; still being copied: {', '.join(scan.pending)}" if scan.pending else ""
        reason = "; ".join(rejected) if rejected else "no new or changed patient"
        return dg.SensorResult(
            skip_reason=reason + waiting, cursor=new_cursor, asset_events=observations(scan.adopted)
        )
    runs: list[dg.RunRequest] = []
    if scan.new or scan.gone or scan.cohort_changed:
        key = f"{','.join(scan.new)}|{','.join(scan.gone)}|{scan.cursor[COHORT_CURSOR]['sig']}"
        runs.append(dg.RunRequest(run_key=f"cohort:{key}", asset_selection=[cohort_manifest.key]))
    runs += [_preprocess(pid, v) for pid, v in sorted({**scan.new, **scan.changed}.items())]
    if scan.new:
        context.log.info(f"new patients: {', '.join(scan.new)}")
    if scan.changed:
        context.log.info(f"changed inputs (new checksum), preprocessed again: {', '.join(scan.changed)}")
    partitions = []
    if scan.new:
        partitions.append(patients_partitions.build_add_request(sorted(scan.new)))
    if scan.unlabelled:
        partitions.append(unlabelled_partitions.build_add_request(sorted(scan.unlabelled)))
    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=partitions,
        asset_events=observations({**scan.adopted, **scan.new, **scan.changed}),
        cursor=new_cursor,
    )


rice_automation = dg.AutomationConditionSensorDefinition(
    "rice_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Evaluates the assets' automation conditions: an unlabelled patient's prediction (and its "
    "report with the occlusion overlay) once its volumes exist, a test patient's occlusion map, and both "
    "again when the volumes or the champion change.",
)
