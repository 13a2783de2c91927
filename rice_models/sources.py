"""Read a patient's landing-zone inputs (NIfTI, DICOM MR series, RT Dose) into canonical images.

Every failure is raised as `InputError`, naming the patient, the file and what is wrong, so one
bad file stops that patient alone. Only de-identified header fields ever leave this module.
"""

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from rice_models.imaging.dicom import dicom_summary, read_mr_series, read_rt_dose, same_frame_of_reference
from rice_models.imaging.volume import image_geometry, load_nifti, world_geometry_notes
from rice_models.provenance import sha256_of

MODALITIES = {"mri_postop": "MR", "mri_event": "MR", "dose": "RTDOSE", "planning_ct": "CT"}


class InputError(ValueError):
    """A patient's input file cannot be used."""

    def __init__(self, patient_id: str, path: Path, message: str) -> None:
        self.patient_id = patient_id
        self.path = path
        super().__init__(f"patient {patient_id}, {path}: {message}")


@dataclasses.dataclass(frozen=True)
class SourceScan:
    """One input as read: the canonical image plus what the catalog records of its source.

    Args:
        channel: `mri_postop`, `mri_event`, `dose` or `planning_ct`.
        path: the landing-zone file or DICOM folder.
        format: `nifti`, `dicom` (MR/CT series folder) or `rtdose`.
        sha256: checksum of the source file (or of the folder's files).
        modality: `MR`, `RTDOSE` or `CT`.
        image: canonical RAS float32 image (dose: in the source's own unit until `dose_maps`).
        header: de-identified header fields (DICOM only).
        notes: what is odd but accepted (e.g. sform and qform that disagree), in words.
    """

    channel: str
    path: Path
    format: str
    sha256: str
    modality: str
    image: nib.Nifti1Image
    header: dict[str, Any]
    notes: tuple[str, ...] = ()

    def geometry(self) -> dict[str, Any]:
        return image_geometry(self.image)


def source_format(path: Path) -> str:
    """`nifti`, `dicom` (a folder) or `rtdose` (a .dcm file), from the path alone."""
    if path.is_dir():
        return "dicom"
    if path.name.endswith(".dcm"):
        return "rtdose"
    return "nifti"


def _nifti_notes(path: Path, accept_missing_geometry: bool) -> list[str]:
    img = nib.load(path)
    if not isinstance(img, nib.spatialimages.SpatialImage):
        return []
    has_world, notes = world_geometry_notes(img)
    if not has_world and accept_missing_geometry:
        notes.append(
            "no world geometry (sform_code = qform_code = 0), accepted by cohort.csv "
            "accept_missing_geometry=yes: nibabel's fallback placement is used"
        )
    return notes


def read_source(
    patient_id: str,
    channel: str,
    path: Path,
    prescription_gy: float | None = None,
    accept_missing_geometry: bool = False,
) -> SourceScan:
    """Read one input into a canonical image.

    Args:
        patient_id: the patient, for error messages.
        channel: `mri_postop`, `mri_event`, `dose` or `planning_ct`.
        path: the landing-zone file or DICOM folder.
        prescription_gy: prescribed dose, needed for an RT Dose with DoseUnits RELATIVE.
        accept_missing_geometry: use a NIfTI without world geometry (both xform codes 0) instead of
            refusing it (cohort.csv `accept_missing_geometry=yes`).

    Raises:
        InputError: the file cannot be read, is not what the channel needs, is not 3D, is a NIfTI
            without world geometry (unless accepted), or is an image without contrast (every finite
            voxel equal, or none finite; the dose's own checks are in `dose_maps`).
    """
    fmt = source_format(path)
    notes: list[str] = []
    try:
        if fmt == "nifti":
            notes = _nifti_notes(path, accept_missing_geometry)
            image = load_nifti(path, require_world_geometry=not accept_missing_geometry)
            header: dict[str, Any] = {}
        elif fmt == "dicom":
            modalities = ("CT",) if channel == "planning_ct" else ("MR",)
            image, header = read_mr_series(path, modalities=modalities), dicom_summary(path)
        else:
            image, header = read_rt_dose(path, prescription_gy=prescription_gy), dicom_summary(path)
    except (OSError, ValueError, EOFError, ImageFileError, zlib.error) as err:
        # `from None`: the message holds the cause, and `rice run` reports the innermost error
        raise InputError(patient_id, path, f"cannot read {channel} ({fmt}): {err}") from None
    if fmt == "rtdose" and channel != "dose":
        raise InputError(patient_id, path, f"an RT Dose file cannot be the {channel} channel")
    if channel != "dose" and (blank := _blank(image)):
        raise InputError(
            patient_id, path, f"the {channel} image is blank ({blank}): an empty or failed export"
        )
    modality = MODALITIES[channel]
    return SourceScan(channel, path, fmt, sha256_of(path), modality, image, header, tuple(notes))


def _blank(image: nib.Nifti1Image) -> str:
    """Why the image has no contrast, in words ('' when it has some)."""
    data = np.asarray(image.dataobj)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return "no finite voxel"
    low, high = float(finite.min()), float(finite.max())
    return f"every voxel is {low:g}" if low == high else ""


FRAME_RELATIONS = ("same_frame", "planning_ct", "assumed")


@dataclasses.dataclass(frozen=True)
class DoseFrame:
    """How the dose is placed on the post-op MRI, decided before anything is written.

    Args:
        relation: `same_frame` (RT Dose and post-op MR series share one FrameOfReferenceUID: placed by
            coordinates), `planning_ct` (the dose lies in the planning CT's frame: the post-op MRI is
            registered to the CT and the dose carried through that transform), or `assumed` (no UID
            to compare, e.g. a NIfTI side: the dose is taken to be in the post-op MRI's world, and
            the blocking coverage checks of `registered_volumes` decide).
        dose_postop_same_uid: the comparison of the UIDs of dose and post-op MR (None: not both DICOM).
        dose_ct_same_uid: the comparison of the UIDs of dose and planning CT (None: not compared).
    """

    relation: str
    dose_postop_same_uid: bool | None
    dose_ct_same_uid: bool | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_dicom(path: Path) -> bool:
    return source_format(path) in ("dicom", "rtdose")


def dose_frame(patient_id: str, inputs: dict[str, Path]) -> DoseFrame:
    """Decide how the dose reaches the post-op MRI (see `DoseFrame`); UIDs never leave the readers.

    Args:
        patient_id: the patient, for error messages.
        inputs: the patient's inputs (`mri_postop`, `dose`, optionally `planning_ct`).

    Raises:
        InputError: dose and post-op MR series lie in different frames of reference and no planning CT
            is given, or the planning CT is not in the dose's frame.
    """
    dose, postop, ct = inputs["dose"], inputs["mri_postop"], inputs.get("planning_ct")
    try:
        postop_same = same_frame_of_reference(dose, postop) if _is_dicom(dose) and _is_dicom(postop) else None
        ct_same = same_frame_of_reference(dose, ct) if ct is not None and _is_dicom(dose) else None
    except ValueError as err:
        raise InputError(patient_id, dose, f"cannot compare frames of reference: {err}") from None
    if ct is not None and ct_same is False:
        raise InputError(
            patient_id,
            ct,
            "the planning CT and the RT Dose have different FrameOfReferenceUID: this is not the CT the "
            "dose was planned on, so it cannot carry the dose onto the MRI",
        )
    if postop_same is True:
        return DoseFrame("same_frame", True, ct_same)
    if ct is not None:
        return DoseFrame("planning_ct", postop_same, ct_same)
    if postop_same is False:
        raise InputError(
            patient_id,
            dose,
            "the RT Dose and the post-op MR series have different FrameOfReferenceUID: the dose lies in "
            "another frame of reference (usually the planning CT's) and cannot be placed on the MRI by "
            f"coordinates; put the planning CT series in {patient_id}/planning_ct/ (the post-op MRI is then "
            "registered to it and the dose carried through), or export the dose in the MRI's frame",
        )
    return DoseFrame("assumed", None, ct_same)
