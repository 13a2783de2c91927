"""The bad-input catalogue: hospital-like inputs, one thing changed per patient, and the exact
outcome each must give through the Dagster assets (accepted with the right value, or refused naming
patient, file and reason, with nothing written by the refusing asset or after it).

Every input is generated here from one synthetic patient (MNI152-based, 4 mm): nothing is committed.
The README's table "What is accepted, what is refused" lists the same cases.
"""

import csv
import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from data_catalog import Catalog
from rice_assets.home import prepare_home
from rice_assets.resources import rice_resources
from rice_assets.runner import failure_reason_of
from rice_assets.stages import STAGES
from rice_models.imaging.volume import data_of, load_nifti, make_image
from rice_models.landing import validate_landing
from rice_models.paths import RicePaths
from rice_models.profiles import PROFILES, get_profile
from rice_models.synth import generate_cohort
from tests.conftest import write_cohort
from tests.inputs import write_nifti, write_rt_dose, write_series
from tests.rice_assets.helpers import materialize, rice_run
from tests.rice_models.imaging.conftest import write_enhanced_mr, write_mr_series

pytestmark = pytest.mark.slow

PID = "P1"
CHAIN = ("raw_scans", "dose_maps", "registered_volumes")
MR_FRAME, CT_FRAME = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102"
EXTRA = ("prescription_gy", "accept_missing_geometry")


@dataclasses.dataclass(frozen=True)
class Base:
    """The synthetic patient every case starts from (canonical images, total dose in Gy)."""

    postop: nib.Nifti1Image
    event: nib.Nifti1Image
    dose: nib.Nifti1Image
    n_fractions: int
    prescription_gy: float


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    return make_base(tmp_path_factory.mktemp("synth"))


def make_base(landing: Path) -> Base:
    """One synthetic patient written to `landing` and read back as the catalogue's starting point."""
    generate_cohort(landing, n_patients=1, seed=3, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    with (landing / "cohort.csv").open() as fh:
        row = next(csv.DictReader(fh))
    folder = landing / row["patient_id"]
    n = int(row["n_fractions"])
    dose = load_nifti(folder / "dose.nii.gz")
    if row["dose_kind"] == "fraction":
        dose = make_image(data_of(dose) * n, dose.affine)
    return Base(
        load_nifti(folder / "mri_postop.nii.gz"),
        load_nifti(folder / "mri_event.nii.gz"),
        dose,
        n,
        float(row["prescription_gy"]),
    )


def _save(img: nib.Nifti1Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def _nifti_patient(folder: Path, b: Base, skip: tuple[str, ...] = ()) -> None:
    for name, img in (("mri_postop", b.postop), ("mri_event", b.event), ("dose", b.dose)):
        if name not in skip:
            _save(img, folder / f"{name}.nii.gz")


def _shifted(img: nib.Nifti1Image, shift_mm: tuple[float, float, float]) -> nib.Nifti1Image:
    affine = np.array(img.affine)
    affine[:3, 3] += shift_mm
    return make_image(data_of(img), affine)


def _rigid(angle_deg: float, shift: tuple[float, float, float]) -> np.ndarray:
    t = np.radians(angle_deg)
    out = np.eye(4)
    out[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    out[:3, 3] = shift
    return out


def _ct_like(mr: nib.Nifti1Image) -> nib.Nifti1Image:
    """A CT-like image of the same head: air -1000 HU, inverted soft-tissue contrast."""
    data = data_of(mr)
    scaled = data / max(float(np.percentile(data, 99)), 1e-6)
    ct = np.where(scaled < 0.05, -1000.0, 1200.0 - 1000.0 * scaled)
    return make_image(ct, mr.affine)


# --- the cases -------------------------------------------------------------------------------------
# build(folder, base, row) writes the patient folder and may change its cohort.csv row.
# Outcome: refused_by (asset, or "cohort_manifest") with `reason` (a regex) and `file` (a name the
# message must contain), or accepted with `value` checked on the lake (home, base).


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Base, dict], None]
    refused_by: str | None = None
    reason: str = ""
    file: str = ""
    value: Callable[[RicePaths, Base], None] | None = None
    assets: tuple[str, ...] = ("raw_scans", "dose_maps")


def _postop_series(syntax: str, **kwargs) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b, skip=("mri_postop",))
        write_series(b.postop, folder / "mri_postop", MR_FRAME, syntax=syntax, **kwargs)

    return build


def _same_as_source(channel: str) -> Callable[[RicePaths, Base], None]:
    def check(home: RicePaths, b: Base) -> None:
        img = nib.load(home.lake_dir("raw_scans", PID) / f"{channel}.nii.gz")
        source = b.postop if channel == "mri_postop" else b.event
        assert img.shape == source.shape and np.allclose(img.affine, source.affine, atol=1e-3)
        tolerance = float(np.abs(data_of(source)).max()) / 30000.0
        assert np.max(np.abs(np.asarray(img.dataobj) - data_of(source))) <= tolerance

    return check


def _dose_max(expected: Callable[[Base], float]) -> Callable[[RicePaths, Base], None]:
    def check(home: RicePaths, b: Base) -> None:
        dose = nib.load(home.lake_dir("dose_maps", PID) / "dose.nii.gz")
        assert float(np.asarray(dose.dataobj).max()) == pytest.approx(expected(b), rel=1e-4)

    return check


def _hot_centre(img: nib.Nifti1Image) -> np.ndarray:
    """World (RAS mm) centroid of the region receiving >= 90 % of the maximum dose."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    idx = np.argwhere(data >= 0.9 * data.max())
    return (np.asarray(img.affine)[:3, :3] @ idx.mean(axis=0)) + np.asarray(img.affine)[:3, 3]


def _registered_dose_like_direct(home: RicePaths, b: Base) -> None:
    """The dose reached the MRI's grid where the plan put it: same maximum, hot region within 6 mm."""
    folder = home.lake_dir("registered_volumes", PID, get_profile().name)
    dose = nib.load(folder / "dose.nii.gz")
    mask = np.asarray(nib.load(folder / "brain_mask.nii.gz").dataobj) > 0
    assert np.asarray(dose.dataobj).max() == pytest.approx(float(data_of(b.dose).max()), rel=0.1)
    assert (np.asarray(dose.dataobj)[mask] > 0).mean() > 0.9
    assert np.linalg.norm(_hot_centre(dose) - _hot_centre(b.dose)) < 6.0


def _fraction_file(folder: Path, b: Base, row: dict, summation: str, kind: str, n: str = "30") -> None:
    _nifti_patient(folder, b, skip=("dose",))
    one = make_image(data_of(b.dose) / b.n_fractions, b.dose.affine)
    write_rt_dose(one, folder / "dose.dcm", MR_FRAME, summation=summation)
    row.update(dose_kind=kind, n_fractions=n, prescription_gy="")


def _dose_values(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b, skip=("dose",))
        _save(make_image(transform(data_of(b.dose)), b.dose.affine), folder / "dose.nii.gz")

    return build


def _rtdose(summation: str = "PLAN", kind: str = "total", **kwargs) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        row.update(dose_kind=kind)
        _nifti_patient(folder, b, skip=("mri_postop", "dose"))
        write_series(b.postop, folder / "mri_postop", MR_FRAME)
        write_rt_dose(b.dose, folder / "dose.dcm", MR_FRAME, summation=summation, **kwargs)

    return build


def _planning_ct(ct_frame: str) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        to_ct = _rigid(10.0, (15.0, -10.0, 20.0))  # the CT's world = to_ct @ the MRI's world
        _nifti_patient(folder, b, skip=("mri_postop", "dose"))
        write_series(b.postop, folder / "mri_postop", MR_FRAME)
        ct = _ct_like(b.postop)
        write_series(make_image(data_of(ct), to_ct @ ct.affine), folder / "planning_ct", ct_frame, "CT")
        write_rt_dose(make_image(data_of(b.dose), to_ct @ b.dose.affine), folder / "dose.dcm", CT_FRAME)

    return build


def _real_rtdose(folder: Path, b: Base, row: dict) -> None:
    """pydicom's rtdose.dcm (a grid far from this head, its own frame), made a plausible course dose."""
    _nifti_patient(folder, b, skip=("dose",))
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    ds.DoseSummationType, ds.DoseUnits = "PLAN", "GY"
    ds.DoseGridScaling = 60.0 / float(ds.pixel_array.max())
    ds.save_as(folder / "dose.dcm")
    row.update(prescription_gy="", n_fractions="30")


def _real_rtdose_dicom_mr(folder: Path, b: Base, row: dict) -> None:
    _real_rtdose(folder, b, row)
    (folder / "mri_postop.nii.gz").unlink()
    write_series(b.postop, folder / "mri_postop", MR_FRAME)


def _no_geometry(channel: str, accept: str = "") -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b, skip=(channel,))
        img = {"mri_postop": b.postop, "dose": b.dose}[channel]
        write_nifti(data_of(img), img.affine, folder / f"{channel}.nii.gz", sform_code=0)
        row.update(accept_missing_geometry=accept)

    return build


def _xform_disagree(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("mri_postop",))
    qform = np.array(b.postop.affine)
    qform[:3, 3] += (20.0, 0.0, 0.0)
    write_nifti(data_of(b.postop), b.postop.affine, folder / "mri_postop.nii.gz", qform=qform)


def _series_edit(edit: Callable[[Path], None]) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b, skip=("mri_postop",))
        write_mr_series(folder / "mri_postop", n_slices=6)
        edit(folder / "mri_postop")

    return build


def _add_other_series(series: Path) -> None:
    write_mr_series(series.parent / "other", n_slices=3)
    for path in (series.parent / "other").iterdir():
        shutil.move(path, series / f"other_{path.name}")


def _mixed_orientation(series: Path) -> None:
    first = sorted(series.iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(first)


def _drop_middle_slice(series: Path) -> None:
    paths = sorted(series.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    paths[2].unlink()


def _second_echo(series: Path) -> None:
    ds = pydicom.dcmread(sorted(series.iterdir())[0])
    ds.SOPInstanceUID = generate_uid()
    ds.EchoTime = 90
    ds.save_as(series / "echo2.dcm")


def _modality_ct(series: Path) -> None:
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality = "CT"
        ds.save_as(path)


def _truncate_one(series: Path) -> None:
    first = sorted(series.iterdir())[0]
    first.write_bytes(first.read_bytes()[:2000])


def _event_enhanced(syntax: str, positions: bool = True) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b, skip=("mri_event",))
        if positions:
            write_series(b.event, folder / "mri_event", MR_FRAME, syntax=syntax, enhanced=True)
        else:
            write_enhanced_mr(folder / "mri_event" / "enhanced.dcm", per_frame_positions=False)

    return build


def _dicomdir_export(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("mri_postop",))
    write_series(b.postop, folder / "mri_postop" / "DICOM" / "S0001", MR_FRAME, syntax="jpeg-lossless")
    dicomdir = Path(get_testdata_file("MR_small.dcm")).parent / "dicomdirtests" / "DICOMDIR"
    shutil.copy(dicomdir, folder / "mri_postop" / "DICOMDIR")


def _noise_event(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("mri_event",))
    noise = np.random.default_rng(0).random(b.event.shape, dtype=np.float32) * float(data_of(b.event).max())
    _save(make_image(noise, b.event.affine), folder / "mri_event.nii.gz")


def _blank_event(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("mri_event",))
    _save(make_image(np.zeros(b.event.shape, dtype=np.float32), b.event.affine), folder / "mri_event.nii.gz")


def _tiny_voxels(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("mri_postop",))
    affine = np.array(b.postop.affine)
    affine[:3, :3] *= 0.4
    _save(make_image(data_of(b.postop), affine), folder / "mri_postop.nii.gz")


def _cropped_dose(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("dose",))
    data = data_of(b.dose)
    keep = data.shape[2] // 4  # a slab of a quarter of the grid, around the hot spot
    k = int(np.unravel_index(np.argmax(data), data.shape)[2])
    lo = max(0, k - keep // 2)
    affine = np.array(b.dose.affine)
    affine[:3, 3] += affine[:3, 2] * lo
    _save(make_image(data[:, :, lo : lo + keep], affine), folder / "dose.nii.gz")


def _four_d(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("dose",))
    data = np.stack([data_of(b.dose)] * 2, axis=-1)
    nib.save(nib.Nifti1Image(data, b.dose.affine), folder / "dose.nii.gz")


def _bad_gzip(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b, skip=("mri_event",))
    (folder / "mri_event.nii.gz").write_bytes(b"not gzip at all")


def _flag(value: str) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b)
        row.update(accept_missing_geometry=value)

    return build


def _rtdose_uneven(folder: Path, b: Base, row: dict) -> None:
    _rtdose()(folder, b, row)
    ds = pydicom.dcmread(folder / "dose.dcm")
    offsets = [float(v) for v in ds.GridFrameOffsetVector]
    offsets[-1] += 7.0
    ds.GridFrameOffsetVector = [f"{v:.6f}" for v in offsets]
    ds.save_as(folder / "dose.dcm")


def _relative(prescription: str) -> Callable[[Path, Base, dict], None]:
    def build(folder: Path, b: Base, row: dict) -> None:
        _nifti_patient(folder, b, skip=("mri_postop", "dose"))
        write_series(b.postop, folder / "mri_postop", MR_FRAME)
        scale = 1.0 / b.prescription_gy  # relative dose: 1.0 = the prescription
        write_rt_dose(b.dose, folder / "dose.dcm", MR_FRAME, units="RELATIVE", scale=scale)
        row.update(prescription_gy=prescription)

    return build


def _stale_cgy(folder: Path, b: Base, row: dict) -> None:
    _nifti_patient(folder, b)  # accepted first; the test then replaces the dose with a cGy one


FULL = CHAIN
CASES = [
    # legitimate exports: accepted with the right value
    Case("postop DICOM, explicit VR", _postop_series("explicit"), value=_same_as_source("mri_postop")),
    Case(
        "postop JPEG Lossless SV1 (4.70)",
        _postop_series("jpeg-lossless"),
        value=_same_as_source("mri_postop"),
    ),
    Case("postop JPEG-LS lossless", _postop_series("jpeg-ls"), value=_same_as_source("mri_postop")),
    Case("postop JPEG 2000 lossless", _postop_series("j2k"), value=_same_as_source("mri_postop")),
    Case("postop RLE lossless", _postop_series("rle"), value=_same_as_source("mri_postop")),
    Case("postop deflated explicit VR", _postop_series("deflate"), value=_same_as_source("mri_postop")),
    Case("postop explicit VR big endian", _postop_series("big"), value=_same_as_source("mri_postop")),
    Case("postop without Part-10 header", _postop_series("no-meta"), value=_same_as_source("mri_postop")),
    Case("postop PACS export: DICOMDIR + sub-folders", _dicomdir_export, value=_same_as_source("mri_postop")),
    Case("event as one Enhanced MR file", _event_enhanced("explicit"), value=_same_as_source("mri_event")),
    Case(
        "event Enhanced MR, JPEG Lossless",
        _event_enhanced("jpeg-lossless"),
        value=_same_as_source("mri_event"),
    ),
    Case("NIfTI sform/qform disagree (sform used)", _xform_disagree, value=_same_as_source("mri_postop")),
    Case("NIfTI without geometry, accepted by option", _no_geometry("mri_postop", "yes")),
    Case("RT Dose PLAN, same frame as the MR", _rtdose(), value=_registered_dose_like_direct, assets=FULL),
    Case(
        "RT Dose RELATIVE x prescription_gy",
        _relative("60"),
        value=_dose_max(lambda b: data_of(b.dose).max()),
    ),
    Case(
        "RT Dose in the planning CT's frame, CT given",
        _planning_ct(CT_FRAME),
        value=_registered_dose_like_direct,
        assets=FULL,
    ),
    # wrong inputs: refused, naming patient, file and reason, nothing written
    Case(
        "RT Dose FRACTION (one fraction) as total",
        lambda f, b, r: _fraction_file(f, b, r, "FRACTION", "total"),
        "dose_maps",
        r"Gy a fraction, outside the plausible",
        "dose.dcm",
    ),
    Case(
        "RT Dose FRACTION_SESSION as total",
        lambda f, b, r: _fraction_file(f, b, r, "FRACTION_SESSION", "total"),
        "dose_maps",
        r"holds one fraction, but cohort.csv says dose_kind=total",
        "dose.dcm",
    ),
    Case(
        "RT Dose FRACTION, total, no covariates",
        lambda f, b, r: _fraction_file(f, b, r, "FRACTION", "total", ""),
        "dose_maps",
        r"give n_fractions or prescription_gy",
        "dose.dcm",
    ),
    Case(
        "RT Dose PLAN as one fraction",
        _rtdose(kind="fraction"),
        "dose_maps",
        r"holds the whole course",
        "dose.dcm",
    ),
    Case("RT Dose BEAM (partial)", _rtdose("BEAM"), "dose_maps", r"partial dose", "dose.dcm"),
    Case(
        "RT Dose DoseType ERROR",
        _rtdose(dose_type="ERROR"),
        "dose_maps",
        r"DoseType 'ERROR' is not a dose",
        "dose.dcm",
    ),
    Case(
        "NIfTI one fraction as total, prescription given",
        _dose_values(lambda d: d / 30.0),
        "dose_maps",
        r"x prescription_gy",
        "dose.nii.gz",
    ),
    Case(
        "dose in cGy",
        _dose_values(lambda d: d * 100.0),
        "dose_maps",
        r"outside the plausible range",
        "dose.nii.gz",
    ),
    Case("dose all zero", _dose_values(lambda d: d * 0.0), "dose_maps", r"all zero", "dose.nii.gz"),
    Case(
        "dose with negative voxels",
        _dose_values(lambda d: d - 5.0),
        "dose_maps",
        r"negative voxels",
        "dose.nii.gz",
    ),
    Case(
        "dose with NaN",
        _dose_values(lambda d: np.where(d > d.max() / 2, np.nan, d)),
        "dose_maps",
        r"non-finite",
        "dose.nii.gz",
    ),
    Case("dose 4D with two volumes", _four_d, "dose_maps", r"expected one 3D volume", "dose.nii.gz"),
    Case(
        "RT Dose RELATIVE without prescription_gy", _relative(""), "dose_maps", r"prescription_gy", "dose.dcm"
    ),
    Case("RT Dose uneven frame offsets", _rtdose_uneven, "dose_maps", r"not evenly spaced", "dose.dcm"),
    Case(
        "RT Dose in another frame than the MR series",
        _real_rtdose_dicom_mr,
        "dose_maps",
        r"different FrameOfReferenceUID.*planning_ct",
        "dose.dcm",
    ),
    Case(
        "planning CT not in the dose's frame",
        _planning_ct(MR_FRAME),
        "dose_maps",
        r"planning CT and the RT Dose have different FrameOfReferenceUID",
        "planning_ct",
    ),
    Case(
        "pydicom rtdose.dcm far from a NIfTI head",
        _real_rtdose,
        "registered_volumes",
        r"dose grid covers 0% of the brain",
        "dose.dcm",
        assets=FULL,
    ),
    Case(
        "dose grid cropped to a slab",
        _cropped_dose,
        "registered_volumes",
        r"dose grid covers \d+% of the brain",
        "dose.nii.gz",
        assets=FULL,
    ),
    Case(
        "NIfTI dose 200 mm off the head",
        lambda f, b, r: (
            _nifti_patient(f, b, skip=("dose",)),
            _save(_shifted(b.dose, (200.0, 0.0, 0.0)), f / "dose.nii.gz"),
        ),
        "registered_volumes",
        r"dose grid covers 0% of the brain",
        "dose.nii.gz",
        assets=FULL,
    ),
    Case(
        "event MRI is noise (wrong scan)",
        _noise_event,
        "registered_volumes",
        # ANTs (multi-threaded) registers noise differently from run to run: any of the three refuses it
        r"does not match the post-op MRI|covers \d+% of the brain|could not register the mri_event",
        "mri_event.nii.gz",
        assets=FULL,
    ),
    Case("event MRI blank (all zero)", _blank_event, "raw_scans", r"image is blank", "mri_event.nii.gz"),
    Case(
        "post-op voxel size wrong (x0.4)",
        _tiny_voxels,
        "registered_volumes",
        r"brain mask of \d+ ml",
        "mri_postop.nii.gz",
        assets=FULL,
    ),
    Case(
        "post-op NIfTI without geometry",
        _no_geometry("mri_postop"),
        "raw_scans",
        r"sform_code and qform_code are both 0",
        "mri_postop.nii.gz",
    ),
    Case(
        "dose NIfTI without geometry",
        _no_geometry("dose"),
        "dose_maps",
        r"sform_code and qform_code are both 0",
        "dose.nii.gz",
    ),
    Case(
        "postop folder with two series",
        _series_edit(_add_other_series),
        "raw_scans",
        r"2 series",
        "mri_postop",
    ),
    Case(
        "postop mixed orientations",
        _series_edit(_mixed_orientation),
        "raw_scans",
        r"different ImageOrientationPatient",
        "mri_postop",
    ),
    Case(
        "postop missing slice",
        _series_edit(_drop_middle_slice),
        "raw_scans",
        r"not evenly spaced",
        "mri_postop",
    ),
    Case(
        "postop two echoes in one series",
        _series_edit(_second_echo),
        "raw_scans",
        r"share one position",
        "mri_postop",
    ),
    Case("postop series is CT", _series_edit(_modality_ct), "raw_scans", r"Modality \['CT'\]", "mri_postop"),
    Case(
        "postop series with a text file",
        _series_edit(lambda s: (s / "notes.txt").write_text("x" * 300)),
        "raw_scans",
        r"notes.txt is not a DICOM file",
        "mri_postop",
    ),
    Case("postop truncated slice", _series_edit(_truncate_one), "raw_scans", r"IM0000", "mri_postop"),
    Case(
        "Enhanced MR without frame positions",
        _event_enhanced("explicit", positions=False),
        "raw_scans",
        r"PlanePositionSequence",
        "mri_event",
    ),
    Case(
        "event .nii.gz that is not gzip",
        _bad_gzip,
        "cohort_manifest",
        r"not gzip-compressed",
        "mri_event.nii.gz",
    ),
    Case(
        "accept_missing_geometry 'maybe'",
        _flag("maybe"),
        "cohort_manifest",
        r"accept_missing_geometry",
        "cohort.csv",
    ),
    Case(
        "cGy dose refused, registered_volumes run alone",
        _stale_cgy,
        "registered_volumes",
        r"no accepted dose_maps output",
        "dose.nii.gz",
        assets=FULL,
    ),
]


def _row(b: Base) -> dict:
    return {
        "patient_id": PID,
        "label": "rice",
        "dose_kind": "total",
        "n_fractions": str(b.n_fractions),
        "prescription_gy": f"{b.prescription_gy:g}",
    }


def _written(home: RicePaths, asset: str) -> list[Path]:
    """Files of the patient's partition of `asset`, profile-independent or of any profile."""
    folders = [home.lake_dir(asset, PID), *(home.lake_dir(asset, PID, p) for p in PROFILES)]
    return sorted(f for folder in folders if folder.exists() for f in folder.rglob("*"))


def _recorded(home: RicePaths, asset: str) -> list[str]:
    return [a.artifact_id for a in Catalog(home.catalog).artifacts(asset, PID)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue(case: Case, base: Base, tmp_path: Path) -> None:
    home = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    row = _row(base)
    case.build(home.landing / PID, base, row)
    write_cohort(home.landing, [row], extra=EXTRA)
    resources = rice_resources(home)
    with dg.DagsterInstance.ephemeral() as instance:
        manifest = materialize(["cohort_manifest"], resources, instance)
        assert manifest.success
        if case.refused_by == "cohort_manifest":
            assert PID not in instance.get_dynamic_partitions("patients")
            problems = [str(p) for p in validate_landing(home.landing).problems]
            assert any(
                f"patient {PID}" in p and case.file in p and re.search(case.reason, p) for p in problems
            ), problems
            return
        if case.name.startswith("cGy dose refused"):
            assert materialize(list(CHAIN), resources, instance, PID).success  # accepted first
            _save(
                make_image(data_of(base.dose) * 100.0, base.dose.affine), home.landing / PID / "dose.nii.gz"
            )
            refused = materialize(["dose_maps"], resources, instance, PID, raise_on_error=False)
            assert not refused.success and "outside the plausible range" in failure_reason_of(
                refused.all_events
            )
            assert not _written(home, "dose_maps") and not _recorded(home, "dose_maps")
            assert not _written(home, "registered_volumes") and not _recorded(home, "registered_volumes")
            result = materialize(["registered_volumes"], resources, instance, PID, raise_on_error=False)
        else:
            result = materialize(list(case.assets), resources, instance, PID, raise_on_error=False)
    if case.refused_by is None:
        assert result.success, failure_reason_of(result.all_events)
        if case.value is not None:
            case.value(home, base)
        return
    assert not result.success
    reason = failure_reason_of(result.all_events)
    assert reason.startswith(case.refused_by), reason
    assert f"patient {PID}" in reason and case.file in reason, reason
    assert re.search(case.reason, reason), reason
    for asset in CHAIN[CHAIN.index(case.refused_by) :]:
        assert not _written(home, asset) and not _recorded(home, asset), asset


def test_catalogue_has_at_least_30_cases_with_both_outcomes() -> None:
    assert len(CASES) >= 30
    assert (
        sum(c.refused_by is None for c in CASES) >= 10 and sum(c.refused_by is not None for c in CASES) >= 20
    )
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.slow
def test_rice_run_refuses_the_bad_patients_and_keeps_them_out_of_cv_splits(
    base: Base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `rice run` (run_pipeline): the bad patients fail their preprocessing with the reason, the
    good one goes on; only the good one has registered_volumes, which is what cv_splits takes."""
    home = RicePaths(home=tmp_path / "home", landing=tmp_path / "landing")
    chosen = {
        "GOOD": lambda f, b, r: _nifti_patient(f, b),
        "FRACTION": lambda f, b, r: _fraction_file(f, b, r, "FRACTION", "total"),
        "OTHERFRAME": _real_rtdose,
        "NOGEOM": _no_geometry("mri_postop"),
        "CGY": _dose_values(lambda d: d * 100.0),
    }
    rows = []
    for pid, build in chosen.items():
        row = {**_row(base), "patient_id": pid}
        build(home.landing / pid, base, row)
        rows.append(row)
    write_cohort(home.landing, rows, extra=EXTRA)
    for name, value in (("RICE_HOME", home.home), ("RICE_LANDING", home.landing), ("RICE_PROFILE", "quick")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    prepare_home(home)
    summary = rice_run(home, stages=STAGES[:2])
    failed = {label.split()[-1]: reason for label, reason in summary.failures.items()}
    assert set(failed) == set(chosen) - {"GOOD"}
    assert "Gy a fraction" in failed["FRACTION"] and "dose.dcm" in failed["FRACTION"]
    assert "covers 0% of the brain" in failed["OTHERFRAME"]
    assert "sform_code and qform_code are both 0" in failed["NOGEOM"]
    assert "outside the plausible range" in failed["CGY"]
    ready = {a.partition_key for a in Catalog(home.catalog).artifacts("registered_volumes")}
    assert ready == {"GOOD"}
