"""One patient's prediction by the champion, and its report: Markdown plus a PNG occlusion overlay.

Shared by the `patient_predictions` asset and `rice predict`, so both give the same P(RICE) for the same
registered volumes: the champion's fold ensemble applied with the decision rule it was evaluated with, on
the input built by the training transforms (`load_model_input`). No Dagster here.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from rice_models.channels import channels_of
from rice_models.imaging.volume import load_nifti
from rice_models.labels import label_name
from rice_models.occlusion import load_model_input, occlusion_peak, save_occlusion_result
from rice_models.occlusion import occlusion_maps as compute_occlusion_maps
from rice_models.paths import write_text_atomic
from rice_models.plots import plot_occlusion_overlay
from rice_models.profiles import Profile
from rice_models.registry import LoadedChampion

REPORT = "report.md"
OVERLAY = "overlay.png"
PREDICTION = "prediction.json"


@dataclasses.dataclass(frozen=True)
class PatientPrediction:
    """The champion's answer for one patient.

    Attributes:
        patient_id: the patient.
        probability_rice: P(RICE) of the ensemble by its rule, in [0, 1].
        predicted: `rice` or `recurrence`, by the rule's threshold (strict, as in the evaluation).
        model: registered model name (`rice-net-champion-<profile>`).
        model_version: its registered version (the one carrying alias `champion`).
        combination: the input channels of the champion (e.g. `postop+event+dose`).
        experiment_version: the experiment the champion was evaluated in.
        profile: the processing profile.
        rule: the decision rule (`voting`, `threshold`).
    """

    patient_id: str
    probability_rice: float
    predicted: str
    model: str
    model_version: str
    combination: str
    experiment_version: str | None
    profile: str
    rule: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, the form `rice predict --json` prints and `prediction.json` holds."""
        return dataclasses.asdict(self)


def predict_patient(
    champion: LoadedChampion, model: str, volumes: Path, patient_id: str, profile: str
) -> PatientPrediction:
    """Apply the champion to one patient's registered volumes.

    Args:
        champion: `rice_models.registry.load_champion(...)`.
        model: the registered model name it was loaded from.
        volumes: the patient's `registered_volumes` folder (mri_postop, mri_event, dose, brain_mask NIfTI).
        patient_id: the patient.
        profile: the profile name.

    Raises:
        FileNotFoundError: a volume the champion's combination needs is missing.
    """
    ensemble = champion.ensemble
    combination = str(ensemble.combination)
    prob, pred = ensemble.predict(load_model_input(volumes, combination)[None])
    return PatientPrediction(
        patient_id=patient_id,
        probability_rice=float(prob[0]),
        predicted=label_name(int(pred[0])),
        model=model,
        model_version=str(champion.version),
        combination=combination,
        experiment_version=champion.experiment_version,
        profile=profile,
        rule=ensemble.rule.as_dict(),
    )


def write_patient_report(
    prediction: PatientPrediction, champion: LoadedChampion, volumes: Path, out: Path, profile: Profile
) -> dict[str, Path]:
    """Write `prediction.json`, the occlusion maps (NIfTI), `overlay.png` and `report.md` into `out`.

    The overlay is `rice_models.plots.plot_occlusion_overlay` of the champion's occlusion maps (all
    channels, then each channel; the profile's mask size and overlap) over the post-op MRI with dose
    contours.

    Returns:
        name -> path of every file written (`prediction`, `overlay`, `report`, `occlusion_<key>`...).
    """
    ensemble = champion.ensemble
    image = load_model_input(volumes, prediction.combination)
    result = compute_occlusion_maps(
        ensemble,
        image,
        channels_of(prediction.combination),
        mask_size=profile.occlusion_mask_size,
        overlap=profile.occlusion_overlap,
    )
    postop = load_nifti(volumes / "mri_postop.nii.gz")
    dose = np.asarray(load_nifti(volumes / "dose.nii.gz").dataobj)
    files = {f"occlusion_{k}": v for k, v in save_occlusion_result(result, postop.affine, out).items()}
    title = f"{prediction.patient_id}: P(RICE) {prediction.probability_rice:.3f} ({prediction.combination})"
    files["overlay"] = plot_occlusion_overlay(
        result.maps, np.asarray(postop.dataobj), dose, out / OVERLAY, title
    )
    files["prediction"] = write_text_atomic(out / PREDICTION, json.dumps(prediction.as_dict(), indent=2))
    peak = occlusion_peak(result.maps["all"])
    files["report"] = write_text_atomic(out / REPORT, report_markdown(prediction, peak, volumes))
    return files


def report_markdown(prediction: PatientPrediction, peak: tuple[int, int, int], volumes: Path) -> str:
    """The per-patient report: the answer, the model that gave it, and how to read the overlay."""
    p = prediction
    rule = ", ".join(f"{k} {v}" for k, v in p.rule.items())
    return "\n".join(
        [
            f"# Patient {p.patient_id}: {p.predicted.upper()} (P(RICE) = {p.probability_rice:.3f})",
            "",
            "| | |",
            "|---|---|",
            f"| P(RICE) | {p.probability_rice:.4f} |",
            f"| predicted class | {p.predicted} |",
            f"| model | `{p.model}` version {p.model_version} (alias `champion`) |",
            f"| input combination | `{p.combination}` |",
            f"| decision rule | {rule} |",
            f"| experiment version | `{p.experiment_version}` |",
            f"| profile | {p.profile} |",
            f"| registered volumes | `{volumes}` |",
            "",
            "## Occlusion sensitivity",
            "",
            f"![occlusion overlay]({OVERLAY})",
            "",
            "Drop in P(RICE) when a cube of the input is occluded: red regions support RICE, blue ones "
            f"recurrence; slices cut through the largest drop (voxel {list(peak)}); dose contours at 50% "
            "(yellow) and 95% (pink) of the maximum dose. A research model on a small cohort: not a "
            "clinical decision.",
            "",
        ]
    )
