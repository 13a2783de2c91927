"""`rice predict PATIENT_DIR`: one folder through the same validation, preprocessing and champion as the
pipeline, without the UI, the daemon or the landing zone.

The folder (the landing-zone layout of one patient) is validated and preprocessed by the pipeline's own
assets (`raw_scans`, `dose_maps`, `registered_volumes`, materialised in-process on a scratch RICE_HOME),
then `rice_models.patient_report` applies the champion exactly as the `patient_predictions` asset does,
so the same folder gets the same P(RICE).
"""

import csv
import tempfile
from pathlib import Path

import dagster as dg

from rice_assets.resources import rice_resources
from rice_models.landing import REQUIRED_COLUMNS, validate_landing
from rice_models.paths import RicePaths
from rice_models.patient_report import PatientPrediction, predict_patient, write_patient_report
from rice_models.profiles import get_profile
from rice_models.registry import champion_model_name, load_champion
from rice_models.tracking import default_tracking

PREPROCESSING = ["raw_scans", "dose_maps", "registered_volumes"]


class PredictError(RuntimeError):
    """The folder cannot be predicted (no champion, invalid inputs, preprocessing refused): says why."""


def predict_folder(
    paths: RicePaths,
    patient_dir: Path,
    dose_kind: str = "total",
    n_fractions: int | None = None,
    prescription_gy: float | None = None,
) -> tuple[PatientPrediction, dict[str, Path]]:
    """Predict one patient folder with the current profile's champion; write its report.

    Args:
        paths: the RICE_HOME whose champion (MLflow alias `champion`) is used.
        patient_dir: the patient's folder (mri_postop, mri_event, dose; optional planning_ct/); its
            name is the patient id.
        dose_kind: `total`, or `fraction` when the dose file holds one fraction (then `n_fractions`).
        n_fractions: fractions of the course.
        prescription_gy: needed for a RELATIVE RT Dose.

    Returns:
        The prediction and the report's files (`report`, `overlay`, `prediction`, occlusion maps) in
        `$RICE_HOME/predictions/<profile>/<patient>/`.

    Raises:
        PredictError: no champion for the profile, an invalid folder, or preprocessing refused it.
    """
    profile = get_profile()
    model = champion_model_name(profile.name)
    try:
        champion = load_champion(model, default_tracking(paths))
    except Exception as err:  # MLflow raises its own exception types for a missing model or alias
        raise PredictError(
            f"no champion model for profile {profile.name} ({model}@champion not found in "
            f"{default_tracking(paths).tracking_uri}): train one first with `rice run`"
        ) from err
    patient_dir = patient_dir.resolve()
    pid = patient_dir.name
    with tempfile.TemporaryDirectory(prefix="rice-predict-", dir=paths.home) as tmp:
        scratch = RicePaths(home=Path(tmp) / "home", landing=Path(tmp) / "landing")
        _one_patient_landing(scratch.landing, patient_dir, dose_kind, n_fractions, prescription_gy)
        report = validate_landing(scratch.landing)
        if not any(p.patient_id == pid for p in report.patients):
            raise PredictError("\n".join(str(p) for p in report.problems))
        volumes = _preprocess(scratch, pid)
        prediction = predict_patient(champion, model, volumes, pid, profile.name)
        out = paths.home / "predictions" / profile.name / pid
        files = write_patient_report(prediction, champion, volumes, out, profile)
    return prediction, files


def _one_patient_landing(
    landing: Path, patient_dir: Path, dose_kind: str, n_fractions: int | None, prescription_gy: float | None
) -> None:
    landing.mkdir(parents=True)
    (landing / patient_dir.name).symlink_to(patient_dir, target_is_directory=True)
    extra = ("prescription_gy",) if prescription_gy is not None else ()
    with (landing / "cohort.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*REQUIRED_COLUMNS, *extra])
        writer.writeheader()
        row = {"patient_id": patient_dir.name, "dose_kind": dose_kind, "n_fractions": n_fractions or ""}
        if prescription_gy is not None:
            row["prescription_gy"] = prescription_gy
        writer.writerow(row)


def _preprocess(scratch: RicePaths, pid: str) -> Path:
    """Materialise the preprocessing assets for the one patient on the scratch home; its volumes folder."""
    from rice_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from rice_assets.runner import failure_reason_of

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("patients", [pid])
        result = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=PREPROCESSING,
            partition_key=pid,
            resources=rice_resources(scratch),
            instance=instance,
            raise_on_error=False,
        )
        if not result.success:
            raise PredictError(failure_reason_of([e for e in result.all_events]))
    return scratch.lake_dir("registered_volumes", pid, get_profile().name)
