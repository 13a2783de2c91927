"""Quality control that gates the cohort: which patients may enter an experiment.

A patient enters `cv_splits` (and so the next experiment) only when its latest preprocessing for the
profile passed every gating check, read from the QC figures `registered_volumes` records with its
volumes (nothing is recomputed here):

| check | QC figure recorded by `registered_volumes` | passes when |
|---|---|---|
| `dose_plausible` | `dose_problems` (`rice_models.imaging.dose.dose_sanity` of the registered dose) | empty |
| `finite_values` | `nonfinite` (channel -> any NaN/Inf) | no channel true |
| `brain_mask_volume` | `brain_volume_ok` (mask volume within the profile's range) | true |
| `registration_similarity` | `ncc_ok` (NCC of event vs post-op MRI >= the profile's `ncc_min`) | true |

and, besides: the volumes exist for the profile, were not recorded as refused (`accepted` false), and are
not older than the patient's `raw_scans` or `dose_maps` (re-made inputs mean the volumes are stale).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

GATING_CHECKS: tuple[str, ...] = (
    "dose_plausible",
    "finite_values",
    "brain_mask_volume",
    "registration_similarity",
)
_FIGURE_OF: dict[str, str] = {
    "dose_plausible": "dose_problems",
    "finite_values": "nonfinite",
    "brain_mask_volume": "brain_volume_ok",
    "registration_similarity": "ncc_ok",
}


@dataclasses.dataclass(frozen=True)
class Preprocessed:
    """What the catalog holds of one patient's latest preprocessing for a profile.

    Args:
        patient_id: the patient.
        qc: the metadata recorded with its `registered_volumes` (None: no volumes for the profile).
        created: when those volumes were recorded.
        upstream: upstream asset (`raw_scans`, `dose_maps`) -> when its outputs were recorded.
    """

    patient_id: str
    qc: Mapping[str, Any] | None
    created: datetime | None = None
    upstream: Mapping[str, datetime] = dataclasses.field(default_factory=dict)


def failed_checks(qc: Mapping[str, Any]) -> list[str]:
    """`check: reason` for every gating check the recorded QC figures fail or do not hold.

    Args:
        qc: the metadata `registered_volumes` recorded.
    """
    problems = []
    for check in GATING_CHECKS:
        if _FIGURE_OF[check] not in qc:
            problems.append(f"{check}: not recorded (volumes made by an older version; re-materialise them)")
    if qc.get("dose_problems"):
        problems.append(f"dose_plausible: {'; '.join(map(str, qc['dose_problems']))}")
    bad = sorted(name for name, flag in (qc.get("nonfinite") or {}).items() if flag)
    if bad:
        problems.append(f"finite_values: NaN or Inf in {', '.join(bad)}")
    if qc.get("brain_volume_ok") is False:
        problems.append(
            f"brain_mask_volume: {float(qc.get('brain_volume_ml', float('nan'))):.0f} ml implausible"
        )
    if qc.get("ncc_ok") is False:
        ncc = float(qc.get("ncc_event_postop", float("nan")))
        problems.append(f"registration_similarity: NCC {ncc:.3f} below the profile's ncc_min")
    return problems


def exclusion_reason(record: Preprocessed, profile: str) -> str | None:
    """Why a patient may not enter an experiment of `profile`, or None when it may.

    Args:
        record: the patient's latest preprocessing.
        profile: the profile name (for the message).
    """
    if record.qc is None:
        return f"no registered_volumes for profile {profile} (not preprocessed yet, or refused)"
    if record.qc.get("accepted") is False:
        return "preprocessing refused the patient"
    newer = sorted(a for a, t in record.upstream.items() if record.created is not None and t > record.created)
    if newer:
        return f"{' and '.join(newer)} re-made after registered_volumes: re-materialise registered_volumes"
    problems = failed_checks(record.qc)
    return f"failed blocking QC: {'; '.join(problems)}" if problems else None


def gate(records: Sequence[Preprocessed], profile: str) -> tuple[list[str], dict[str, str]]:
    """Split patients into those that may enter an experiment and those excluded, with the reason.

    Args:
        records: one per candidate patient.
        profile: the profile name.

    Returns:
        (accepted ids sorted, excluded id -> reason).
    """
    accepted, excluded = [], {}
    for record in sorted(records, key=lambda r: r.patient_id):
        reason = exclusion_reason(record, profile)
        if reason is None:
            accepted.append(record.patient_id)
        else:
            excluded[record.patient_id] = reason
    return accepted, excluded
