"""Generate a synthetic RICE-vs-recurrence cohort in the landing-zone layout.

    out/cohort.csv                 patient_id,label,split,dose_kind,n_fractions,age,sex,prescription_gy
    out/<patient_id>/mri_postop.nii.gz
    out/<patient_id>/mri_event.nii.gz
    out/<patient_id>/dose.nii.gz   Gy; one fraction's dose when dose_kind = fraction
    out/ground_truth.json          what was planted (not part of the landing-zone contract)

Each patient is drawn from its own random stream (seed, patient index), so a patient's data do not
depend on the cohort size and the same seed reproduces the same data.
"""

import contextlib
import csv
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from rice_models.paths import atomic_path
from rice_models.synth.anatomy import AnatomyMasks, HeadModel, load_head_model, load_masks
from rice_models.synth.dose import DosePlan, plan_dose
from rice_models.synth.geometry import (
    Grid,
    StorageLayout,
    grid_covering,
    random_pose,
    resample,
    sample_layout,
    transform_points,
)
from rice_models.synth.label_model import NODULAR, RECURRENCE, RICE, PatientLatents, sample_latents
from rice_models.synth.lesions import (
    EVENT_CAVITY_SHRINK_RANGE,
    RIM_ENHANCEMENT_EVENT,
    RIM_ENHANCEMENT_POSTOP,
    Ellipsoid,
    Lesion,
    paint_cavity,
    paint_lesion,
    place_cavity,
    place_diffuse,
    place_nodule,
    place_residual,
)
from rice_models.synth.scanner import FILE_MODE, ScannerEffects, acquire_mri, sample_effects, write_nifti

GENERATOR_VERSION = "1"
PATIENT_ID_FORMAT = "SYN-{:04d}"
TEST_FRACTION = 0.13
UNLABELLED_FRACTION = 0.05
MIN_UNLABELLED_FROM = 10  # cohorts this large get at least one unlabelled patient
P_FRACTION_DOSE = 0.25  # dose exported as a single fraction
P_INT16_MRI = 0.6  # MRI stored as int16 with scl_slope (else float32)
DOSE_GRID_SPACINGS_MM = (2.0, 2.5, 3.0)
CSV_COLUMNS = ("patient_id", "label", "split", "dose_kind", "n_fractions", "age", "sex", "prescription_gy")
SCANS = ("mri_postop", "mri_event", "dose")
_PATIENT_STREAM = 0
_COHORT_STREAM = 1


@dataclasses.dataclass(frozen=True)
class PatientSpec:
    """Everything planted for one patient (the files hold its rendering).

    Args:
        patient_id: landing-zone id.
        label: the true label (`rice` / `recurrence`), also for unlabelled patients.
        csv_label: the label written to cohort.csv (empty for unlabelled patients).
        split: `test` or empty.
        dose_kind: `total` or `fraction`.
        latents: the label model's features.
        cavity: post-op cavity (anatomy mm).
        event_cavity_shrink: cavity scale at the event scan.
        residual: residual tumour nodule on the post-op scan, if any.
        lesion: the new lesion on the event scan.
        plan: dose-plan parameters and dose-volume figures.
        poses: 4x4 anatomy -> scanner-world transforms, keys `postop` and `event`.
        layouts: storage layout per scan (keys of SCANS).
        effects: scanner effects per MRI scan.
    """

    patient_id: str
    label: str
    csv_label: str
    split: str
    dose_kind: str
    latents: PatientLatents
    cavity: Ellipsoid
    event_cavity_shrink: float
    residual: Lesion | None
    lesion: Lesion
    plan: dict[str, object]
    poses: dict[str, np.ndarray]
    layouts: dict[str, StorageLayout]
    effects: dict[str, ScannerEffects]

    @property
    def n_fractions(self) -> int:
        """Number of fractions of the plan."""
        return self.latents.scheme.n_fractions

    @property
    def event_to_postop(self) -> np.ndarray:
        """4x4 event-scan world -> post-op world: what a registration must recover."""
        return self.poses["postop"] @ np.linalg.inv(self.poses["event"])

    def world_mm(self, session: str, anatomy_mm: np.ndarray) -> np.ndarray:
        """An anatomy-frame point in the scanner world of `session` (`postop` or `event`)."""
        return transform_points(self.poses[session], anatomy_mm)

    def csv_row(self) -> dict[str, str]:
        """The patient's cohort.csv row."""
        return {
            "patient_id": self.patient_id,
            "label": self.csv_label,
            "split": self.split,
            "dose_kind": self.dose_kind,
            "n_fractions": str(self.n_fractions),
            "age": f"{self.latents.age_years:.0f}",
            "sex": "F" if self.latents.female else "M",
            "prescription_gy": f"{self.latents.scheme.prescription_gy:g}",
        }

    def ground_truth(self) -> dict[str, object]:
        """JSON-ready record of what was planted, with positions in every frame."""
        lesion = self.lesion.as_dict()
        lesion["centre_postop_world_mm"] = _rounded(self.world_mm("postop", self.lesion.centre_mm))
        lesion["centre_event_world_mm"] = _rounded(self.world_mm("event", self.lesion.centre_mm))
        cavity = self.cavity.as_dict()
        cavity["centre_postop_world_mm"] = _rounded(self.world_mm("postop", self.cavity.centre_mm))
        cavity["centre_event_world_mm"] = _rounded(self.world_mm("event", self.cavity.centre_mm))
        cavity["event_shrink"] = round(self.event_cavity_shrink, 3)
        residual = None
        if self.residual is not None:
            residual = self.residual.as_dict()
            residual["centre_postop_world_mm"] = _rounded(self.world_mm("postop", self.residual.centre_mm))
        return {
            "label": self.label,
            "label_in_csv": self.csv_label,
            "split": self.split,
            "dose_kind": self.dose_kind,
            "n_fractions": self.n_fractions,
            "latents": self.latents.as_dict(),
            "cavity": cavity,
            "residual_tumour": residual,
            "lesion": lesion,
            "plan": self.plan,
            "poses": {
                "anatomy_to_postop_world": _rounded(self.poses["postop"]),
                "anatomy_to_event_world": _rounded(self.poses["event"]),
                "event_world_to_postop_world": _rounded(self.event_to_postop),
            },
            "scans": {
                name: {
                    **self.layouts[name].as_dict(),
                    **(self.effects[name].as_dict() if name in self.effects else {}),
                }
                for name in SCANS
            },
        }


@dataclasses.dataclass(frozen=True)
class SynthCohort:
    """A generated cohort: where it was written, how, and what was planted per patient."""

    root: Path
    seed: int
    spacing_mm: float
    patients: list[PatientSpec]

    @property
    def cohort_csv(self) -> Path:
        """The cohort table."""
        return self.root / "cohort.csv"

    @property
    def ground_truth_json(self) -> Path:
        """The planted ground truth."""
        return self.root / "ground_truth.json"

    def patient(self, patient_id: str) -> PatientSpec:
        """The spec of one patient.

        Raises:
            KeyError: no such patient.
        """
        for spec in self.patients:
            if spec.patient_id == patient_id:
                return spec
        raise KeyError(patient_id)


def _rounded(values: np.ndarray, digits: int = 4) -> list[Any]:
    return list(np.round(np.asarray(values, dtype=float), digits).tolist())


def _session_grid(masks: AnatomyMasks, pose: np.ndarray, layout: StorageLayout) -> Grid:
    return grid_covering(transform_points(pose, masks.head_corners_mm()), layout.zooms_mm)


def _place_lesions(
    rng: np.random.Generator, masks: AnatomyMasks, cavity: Ellipsoid, latents: PatientLatents, plan: DosePlan
) -> tuple[Lesion | None, Lesion]:
    residual = place_residual(rng, masks, cavity) if latents.residual_tumour else None
    if latents.presentation == NODULAR:
        lesion = place_nodule(rng, masks, cavity)
    else:
        lesion = place_diffuse(rng, masks, cavity, plan.relative_dose_at)
    return residual, dataclasses.replace(lesion, dose_gy=plan.dose_at(lesion.centre_mm))


def _session_volumes(head: HeadModel, masks: AnatomyMasks, spec: PatientSpec) -> dict[str, np.ndarray]:
    postop = head.t1.copy()
    if spec.residual is not None:
        paint_lesion(head, masks, postop, spec.residual)
    paint_cavity(head, postop, spec.cavity, RIM_ENHANCEMENT_POSTOP)
    event = head.t1.copy()
    paint_lesion(head, masks, event, spec.lesion)
    paint_cavity(head, event, spec.cavity.scaled(spec.event_cavity_shrink), RIM_ENHANCEMENT_EVENT)
    return {"postop": postop, "event": event}


def _draw_patient(
    rng: np.random.Generator, patient_id: str, spacing_mm: float
) -> tuple[PatientSpec, DosePlan]:
    """Draw everything about one patient (no files): latents, anatomy, plan, lesions, acquisitions."""
    masks = load_masks()
    latents = sample_latents(rng)
    cavity = place_cavity(rng, masks, latents.cavity_radii_mm)
    plan = plan_dose(rng, masks, cavity, latents.ctv_margin_mm, latents.scheme.prescription_gy)
    residual, lesion = _place_lesions(rng, masks, cavity, latents, plan)
    poses = {"postop": random_pose(rng, masks.centre_mm), "event": random_pose(rng, masks.centre_mm)}
    dose_kind = "fraction" if rng.random() < P_FRACTION_DOSE else "total"
    dose_spacing = float(rng.choice(DOSE_GRID_SPACINGS_MM))
    layouts = {
        "mri_postop": sample_layout(rng, spacing_mm, P_INT16_MRI),
        "mri_event": sample_layout(rng, spacing_mm, P_INT16_MRI),
        "dose": sample_layout(rng, dose_spacing, 0.0, thick_slice_probability=0.0),
    }
    spec = PatientSpec(
        patient_id=patient_id,
        label=latents.label,
        csv_label=latents.label,
        split="",
        dose_kind=dose_kind,
        latents=latents,
        cavity=cavity,
        event_cavity_shrink=float(rng.uniform(*EVENT_CAVITY_SHRINK_RANGE)),
        residual=residual,
        lesion=lesion,
        plan=plan.as_dict(),
        poses=poses,
        layouts=layouts,
        effects={"mri_postop": sample_effects(rng), "mri_event": sample_effects(rng)},
    )
    return spec, plan


def _write_patient(
    rng: np.random.Generator, folder: Path, spec: PatientSpec, plan: DosePlan, spacing_mm: float
) -> None:
    masks = load_masks()
    head = load_head_model(spacing_mm)
    volumes = _session_volumes(head, masks, spec)
    for session, volume in volumes.items():
        name = f"mri_{session}"
        grid = _session_grid(masks, spec.poses[session], spec.layouts[name])
        data = acquire_mri(rng, volume, head.affine, spec.poses[session], grid, spec.effects[name])
        write_nifti(
            folder / f"{name}.nii.gz", data, grid, spec.layouts[name], f"RICE synthetic T1c {session}"
        )
    grid = _session_grid(masks, spec.poses["postop"], spec.layouts["dose"])
    dose = resample(plan.dose_gy, plan.affine, np.linalg.inv(spec.poses["postop"]), grid)
    if spec.dose_kind == "fraction":
        dose /= np.float32(spec.n_fractions)
    write_nifti(
        folder / "dose.nii.gz",
        dose,
        grid,
        spec.layouts["dose"],
        f"RICE synthetic RT dose Gy {spec.dose_kind}",
    )


def simulate_patient(out: Path, index: int, seed: int, spacing_mm: float) -> PatientSpec:
    """Draw patient `index` of the cohort with `seed` and write its three scans under out/<patient_id>/.

    Args:
        out: cohort root.
        index: patient index (0-based); the id is PATIENT_ID_FORMAT of index + 1.
        seed: cohort seed.
        spacing_mm: MRI voxel size.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PATIENT_STREAM, index)))
    patient_id = PATIENT_ID_FORMAT.format(index + 1)
    spec, plan = _draw_patient(rng, patient_id, spacing_mm)
    _write_patient(rng, out / patient_id, spec, plan, spacing_mm)
    return spec


def _simulate_patients(
    out: Path,
    n_patients: int,
    seed: int,
    spacing_mm: float,
    workers: int | None,
    on_patient: Callable[[PatientSpec], None] | None = None,
) -> list[PatientSpec]:
    """`simulate_patient` for every index, in index order, in `workers` processes (spawned: no fork
    of a parent that may hold OpenMP or torch threads); `on_patient` is called as each is written."""
    workers = min(workers or os.cpu_count() or 1, n_patients)
    draw = functools.partial(simulate_patient, out, seed=seed, spacing_mm=spacing_mm)
    specs: list[PatientSpec] = []
    with contextlib.ExitStack() as stack:
        if workers <= 1:
            written: Iterable[PatientSpec] = map(draw, range(n_patients))
        else:
            pool = stack.enter_context(
                ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            )
            written = pool.map(draw, range(n_patients))
        for spec in written:
            specs.append(spec)
            if on_patient is not None:
                on_patient(spec)
    return specs


def default_n_test(n_patients: int) -> int:
    """Default size of the independent test set: round(TEST_FRACTION * n)."""
    return int(round(TEST_FRACTION * n_patients))


def default_n_unlabelled(n_patients: int) -> int:
    """Default number of unlabelled patients: UNLABELLED_FRACTION of n (>= 1 from MIN_UNLABELLED_FROM)."""
    return max(int(round(UNLABELLED_FRACTION * n_patients)), 1 if n_patients >= MIN_UNLABELLED_FROM else 0)


def check_counts(n_patients: int, n_test: int, n_unlabelled: int) -> None:
    """Check that a test set and unlabelled patients of these sizes fit the cohort.

    Raises:
        ValueError: they do not (at least one patient must stay labelled or the cohort is empty).
    """
    if not 0 <= n_unlabelled < n_patients or not 0 <= n_test <= n_patients - n_unlabelled:
        raise ValueError(
            f"cannot hold out {n_test} test and {n_unlabelled} unlabelled patients of {n_patients}"
        )


def assign_splits(
    labels: list[str], n_test: int, n_unlabelled: int, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Pick unlabelled patients at random, then a label-stratified test set among the labelled.

    Args:
        labels: true label per patient.
        n_test: test-set size.
        n_unlabelled: patients whose label is withheld (predicted only; never in the test set).
        rng: random generator.

    Returns:
        (csv labels, splits), one per patient.

    Raises:
        ValueError: the counts do not fit the cohort.
    """
    n = len(labels)
    check_counts(n, n_test, n_unlabelled)
    unlabelled = set(rng.choice(n, size=n_unlabelled, replace=False).tolist())
    labelled = [i for i in range(n) if i not in unlabelled]
    rice = [i for i in labelled if labels[i] == RICE]
    recurrence = [i for i in labelled if labels[i] == RECURRENCE]
    n_rice = int(round(n_test * len(rice) / max(len(labelled), 1)))
    n_rice = min(max(n_rice, n_test - len(recurrence)), len(rice))
    test = set(rng.choice(rice, size=n_rice, replace=False).tolist()) if n_rice else set()
    if n_test - n_rice:
        test |= set(rng.choice(recurrence, size=n_test - n_rice, replace=False).tolist())
    csv_labels = ["" if i in unlabelled else labels[i] for i in range(n)]
    splits = ["test" if i in test else "" for i in range(n)]
    return csv_labels, splits


def _write_csv(path: Path, patients: list[PatientSpec]) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
            writer.writeheader()
            writer.writerows(spec.csv_row() for spec in patients)
        tmp.chmod(FILE_MODE)


def _write_ground_truth(path: Path, cohort: SynthCohort) -> None:
    document = {
        "generator": "rice_models.synth",
        "version": GENERATOR_VERSION,
        "seed": cohort.seed,
        "spacing_mm": cohort.spacing_mm,
        "frames": (
            "anatomy = MNI152 mm; <session>_world = scanner world of that session "
            "(the stored affines map voxels to it); dose shares the post-op world"
        ),
        "patients": {spec.patient_id: spec.ground_truth() for spec in cohort.patients},
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, indent=1))
        tmp.chmod(FILE_MODE)


def generate_cohort(
    out: Path,
    n_patients: int,
    seed: int,
    *,
    spacing_mm: float = 2.0,
    n_test: int | None = None,
    n_unlabelled: int | None = None,
    workers: int | None = None,
    on_patient: Callable[[PatientSpec], None] | None = None,
) -> SynthCohort:
    """Write a synthetic cohort following the landing-zone contract (see docs/synthetic_cohort.md).

    Patients are drawn from independent seed streams (`simulate_patient`), so they are the same whether
    written by one process or several.

    Args:
        out: landing folder to write (created; existing files of the same names are replaced).
        n_patients: number of patients (ids SYN-0001 ...).
        seed: random seed; the same seed gives the same data.
        spacing_mm: MRI voxel size (thick-slice scans use SLICE_FACTOR times it along one axis).
        n_test: size of the stratified independent test set (default round(0.13 * n_patients)).
        n_unlabelled: patients with an empty label (default 5 %, at least 1 from 10 patients).
        workers: processes writing patients (default: the CPU count, at most one per patient; 1 writes
            them in this process).
        on_patient: called with each patient's spec as it is written, in index order (progress).

    Returns:
        The cohort's specs; ground truth also in out/ground_truth.json.

    Raises:
        ValueError: invalid sizes or spacing.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if not 0.5 <= spacing_mm <= 8.0:
        raise ValueError(f"spacing_mm must be within [0.5, 8] mm, got {spacing_mm}")
    n_test = default_n_test(n_patients) if n_test is None else n_test
    n_unlabelled = default_n_unlabelled(n_patients) if n_unlabelled is None else n_unlabelled
    check_counts(n_patients, n_test, n_unlabelled)
    out.mkdir(parents=True, exist_ok=True)
    specs = _simulate_patients(out, n_patients, seed, spacing_mm, workers, on_patient)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_COHORT_STREAM,)))
    csv_labels, splits = assign_splits([s.label for s in specs], n_test, n_unlabelled, rng)
    specs = [
        dataclasses.replace(spec, csv_label=label, split=split)
        for spec, label, split in zip(specs, csv_labels, splits, strict=True)
    ]
    cohort = SynthCohort(root=out, seed=seed, spacing_mm=spacing_mm, patients=specs)
    _write_csv(cohort.cohort_csv, specs)
    _write_ground_truth(cohort.ground_truth_json, cohort)
    return cohort
