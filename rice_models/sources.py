"""Read a patient's landing-zone inputs (NIfTI, DICOM MR series, RT Dose) into canonical images.

Every failure is raised as `InputError`, naming the patient, the file and what is wrong, so one
bad file stops that patient alone. Only de-identified header fields ever leave this module.
"""

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
from nibabel.filebasedimages import ImageFileError

from rice_models.imaging.dicom import dicom_summary, read_mr_series, read_rt_dose
from rice_models.imaging.volume import image_geometry, load_nifti
from rice_models.provenance import sha256_of


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
        channel: `mri_postop`, `mri_event` or `dose`.
        path: the landing-zone file or DICOM folder.
        format: `nifti`, `dicom` (MR series folder) or `rtdose`.
        sha256: checksum of the source file (or of the folder's files).
        modality: `MR` or `RTDOSE`.
        image: canonical RAS float32 image (dose: in the source's own unit until `dose_maps`).
        header: de-identified header fields (DICOM only).
    """

    channel: str
    path: Path
    format: str
    sha256: str
    modality: str
    image: nib.Nifti1Image
    header: dict[str, Any]

    def geometry(self) -> dict[str, Any]:
        return image_geometry(self.image)


def source_format(path: Path) -> str:
    """`nifti`, `dicom` (a folder) or `rtdose` (a .dcm file), from the path alone."""
    if path.is_dir():
        return "dicom"
    if path.name.endswith(".dcm"):
        return "rtdose"
    return "nifti"


def read_source(
    patient_id: str, channel: str, path: Path, prescription_gy: float | None = None
) -> SourceScan:
    """Read one input into a canonical image.

    Args:
        patient_id: the patient, for error messages.
        channel: `mri_postop`, `mri_event` or `dose`.
        path: the landing-zone file or DICOM folder.
        prescription_gy: prescribed dose, needed for an RT Dose with DoseUnits RELATIVE.

    Raises:
        InputError: the file cannot be read, is not what the channel needs, or is not 3D.
    """
    fmt = source_format(path)
    try:
        if fmt == "nifti":
            image, header = load_nifti(path), {}
        elif fmt == "dicom":
            image, header = read_mr_series(path), dicom_summary(path)
        else:
            image, header = read_rt_dose(path, prescription_gy=prescription_gy), dicom_summary(path)
    except (OSError, ValueError, EOFError, ImageFileError, zlib.error) as err:
        raise InputError(patient_id, path, f"cannot read {channel} ({fmt}): {err}") from err
    if fmt == "rtdose" and channel != "dose":
        raise InputError(patient_id, path, f"an RT Dose file cannot be the {channel} channel")
    modality = "RTDOSE" if channel == "dose" else "MR"
    return SourceScan(channel, path, fmt, sha256_of(path), modality, image, header)
