"""Tests of the synthetic cohort generator (rice_models.synth): contract, geometry, dose, label model."""

import csv
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from rice_models.synth import bayes_separability, generate_cohort, sample_latent_table, sample_latents
from rice_models.synth.anatomy import load_masks
from rice_models.synth.cohort import (
    CSV_COLUMNS,
    _draw_patient,
    _write_patient,
    assign_splits,
    default_n_test,
    default_n_unlabelled,
)
from rice_models.synth.dose import plan_dose
from rice_models.synth.geometry import StorageLayout, to_storage
from rice_models.synth.label_model import SCHEMES
from rice_models.synth.lesions import (
    DIFFUSE_DISTANCE_RANGE_MM,
    DIFFUSE_MIN_DOSE_FRACTION,
    NODULE_OUTWARD_OFFSET_RANGE,
    NODULE_RADIUS_RANGE_MM,
    place_cavity,
    place_diffuse,
    place_nodule,
)

SEED = 5  # with 6 patients: both labels and presentations, a fraction dose, LPS/permuted/thick-slice scans
SPACING = 4.0
CONTRACT_COLUMNS = ["patient_id", "label", "split", "dose_kind", "n_fractions"]
SCAN_FILES = ("mri_postop.nii.gz", "mri_event.nii.gz", "dose.nii.gz")


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("landing")
    generate_cohort(out, 6, SEED, spacing_mm=SPACING, n_test=1, n_unlabelled=1, workers=2)
    return out


@pytest.fixture(scope="module")
def rows(cohort_dir: Path) -> list[dict[str, str]]:
    with (cohort_dir / "cohort.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def truth(cohort_dir: Path) -> dict[str, Any]:
    return json.loads((cohort_dir / "ground_truth.json").read_text())["patients"]  # type: ignore[no-any-return]


def _world_to_voxel(image: nib.Nifti1Image, point_mm: list[float]) -> np.ndarray:
    return (np.linalg.inv(image.affine) @ np.r_[point_mm, 1.0])[:3]


def _value_near(image: nib.Nifti1Image, point_mm: list[float], reduce: str = "max") -> float:
    """max/min of the stored voxels within one voxel of a world point."""
    data = np.asarray(image.dataobj, dtype=np.float32)
    centre = np.round(_world_to_voxel(image, point_mm)).astype(int)
    box = tuple(slice(max(c - 1, 0), c + 2) for c in centre)
    return float(getattr(np, reduce)(data[box]))


def _shell_values(image: nib.Nifti1Image, point_mm: list[float], inner: float, outer: float) -> np.ndarray:
    data = np.asarray(image.dataobj, dtype=np.float32)
    ijk = np.indices(data.shape).reshape(3, -1).T
    world = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
    distance = np.linalg.norm(world - np.asarray(point_mm), axis=1)
    return data.reshape(-1)[(distance >= inner) & (distance <= outer)]


# --- the landing-zone contract ---------------------------------------------------------------------


def test_cohort_csv_follows_the_landing_zone_contract(cohort_dir: Path, rows: list[dict[str, str]]) -> None:
    with (cohort_dir / "cohort.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:5] == CONTRACT_COLUMNS
    assert header == list(CSV_COLUMNS)
    ids = [r["patient_id"] for r in rows]
    assert ids == [f"SYN-{i:04d}" for i in range(1, 7)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    folders = sorted(p.name for p in cohort_dir.iterdir() if p.is_dir())
    assert folders == ids
    for row in rows:
        assert row["label"] in {"rice", "recurrence", ""}
        assert row["split"] in {"test", ""}
        assert row["dose_kind"] in {"total", "fraction"}
        assert int(row["n_fractions"]) > 0
        assert not (row["label"] == "" and row["split"] == "test")
        for name in SCAN_FILES:
            assert (cohort_dir / row["patient_id"] / name).is_file()
    assert sum(r["label"] == "" for r in rows) == 1
    assert sum(r["split"] == "test" for r in rows) == 1
    assert {r["dose_kind"] for r in rows} == {"total", "fraction"}


def test_ground_truth_matches_csv(rows: list[dict[str, str]], truth: dict[str, Any]) -> None:
    assert sorted(truth) == [r["patient_id"] for r in rows]
    for row in rows:
        planted = truth[row["patient_id"]]
        assert planted["label"] in {"rice", "recurrence"}
        assert row["label"] in {"", planted["label"]}
        assert planted["split"] == row["split"] and planted["dose_kind"] == row["dose_kind"]
        assert planted["n_fractions"] == int(row["n_fractions"])
        assert planted["latents"]["prescription_gy"] == pytest.approx(float(row["prescription_gy"]))


def test_scans_are_stored_as_real_exports(cohort_dir: Path, truth: dict[str, Any]) -> None:
    orientations, dtypes = set(), set()
    for pid in truth:
        for name in SCAN_FILES:
            image = nib.nifti1.load(cohort_dir / pid / name)
            dtype = str(image.get_data_dtype())
            assert dtype in ({"float32"} if name == "dose.nii.gz" else {"float32", "int16"})
            assert image.header.get_xyzt_units()[0] == "mm"
            assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
            if dtype == "int16":
                assert image.dataobj.slope != 1.0  # scl_slope carries the scanner units
            orientations.add("".join(nib.aff2axcodes(image.affine)))
            dtypes.add(dtype)
    assert len(orientations) >= 3  # RAS, LPS and a permuted layout at least
    assert "int16" in dtypes


@pytest.mark.parametrize(
    ("n", "n_test", "n_unlabelled"),
    [(1, 0, 0), (5, 1, 0), (9, 1, 0), (10, 1, 1), (40, 5, 2), (92, 12, 5)],
)
def test_default_sizes(n: int, n_test: int, n_unlabelled: int) -> None:
    assert default_n_test(n) == n_test
    assert default_n_unlabelled(n) == n_unlabelled


def test_test_split_is_stratified_and_labelled() -> None:
    labels = ["rice"] * 30 + ["recurrence"] * 10
    csv_labels, splits = assign_splits(labels, 8, 2, np.random.default_rng(0))
    test = [i for i, s in enumerate(splits) if s == "test"]
    assert len(test) == 8
    assert all(csv_labels[i] != "" for i in test)
    assert sorted(labels[i] for i in test).count("rice") in {5, 6}
    assert csv_labels.count("") == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_patients": 0}, "n_patients"),
        ({"n_patients": 3, "n_test": 3, "n_unlabelled": 1}, "cannot hold out"),
        ({"n_patients": 3, "n_unlabelled": 3}, "cannot hold out"),
        ({"n_patients": 3, "n_test": -1}, "cannot hold out"),
        ({"n_patients": 3, "spacing_mm": 0.0}, "spacing_mm"),
    ],
)
def test_invalid_requests_fail_before_writing(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_cohort(tmp_path / "out", seed=0, **kwargs)
    assert not (tmp_path / "out").exists()


# --- determinism ------------------------------------------------------------------------------------


def _arrays(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name in SCAN_FILES:
        image = nib.nifti1.load(folder / name)
        out[name] = (np.asarray(image.dataobj), image.affine)
    return out


def test_same_seed_same_data_independent_of_cohort_size_and_processes(
    tmp_path: Path, cohort_dir: Path
) -> None:
    generate_cohort(tmp_path / "a", 2, SEED, spacing_mm=SPACING, n_test=0, workers=1)  # cohort_dir: 2
    generate_cohort(tmp_path / "b", 1, SEED + 1, spacing_mm=SPACING, n_test=0)
    for pid in ("SYN-0001", "SYN-0002"):
        again, first = _arrays(tmp_path / "a" / pid), _arrays(cohort_dir / pid)
        for name in SCAN_FILES:
            np.testing.assert_array_equal(again[name][0], first[name][0])
            np.testing.assert_array_equal(again[name][1], first[name][1])
    other = _arrays(tmp_path / "b" / "SYN-0001")["mri_event.nii.gz"][0]
    first_event = _arrays(cohort_dir / "SYN-0001")["mri_event.nii.gz"][0]
    assert other.shape != first_event.shape or not np.array_equal(other, first_event)


# --- world consistency ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    [
        StorageLayout((0, 1, 2), (False, False, False), (2.0, 2.0, 2.0), "float32"),
        StorageLayout((0, 1, 2), (True, True, False), (2.0, 2.0, 2.0), "float32"),
        StorageLayout((1, 2, 0), (True, False, True), (2.0, 2.0, 4.0), "int16"),
        StorageLayout((0, 2, 1), (False, False, False), (1.0, 3.0, 1.0), "float32"),
    ],
    ids=["RAS", "LPS", "PSL-thick", "RSA-thick"],
)
def test_storage_layout_keeps_world_positions(layout: StorageLayout) -> None:
    shape = (7, 9, 5)
    ras_affine = np.diag([*layout.zooms_mm, 1.0])
    ras_affine[:3, 3] = (-30.0, 12.5, 4.0)
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ ras_affine[:3, :3].T + ras_affine[:3, 3]
    field = (world @ np.array([1.0, 10.0, 100.0])).reshape(shape)  # a function of world position only
    stored, affine = to_storage(field, ras_affine, layout)
    assert "".join(nib.aff2axcodes(affine)) == layout.orientation
    stored_ijk = np.indices(stored.shape).reshape(3, -1).T
    stored_world = stored_ijk @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(stored.reshape(-1), stored_world @ np.array([1.0, 10.0, 100.0]))
    canonical = nib.as_closest_canonical(nib.Nifti1Image(stored.astype(np.float32), affine))
    np.testing.assert_allclose(np.asarray(canonical.dataobj), field, rtol=1e-6)
    np.testing.assert_allclose(canonical.affine, ras_affine)


def test_planted_lesion_is_bright_at_its_world_position(cohort_dir: Path, truth: dict[str, Any]) -> None:
    """Through every stored affine (any layout), the lesion centre is bright and the cavity dark."""
    for pid, planted in truth.items():
        event = nib.nifti1.load(cohort_dir / pid / "mri_event.nii.gz")
        centre = planted["lesion"]["centre_event_world_mm"]
        surround = _shell_values(event, centre, 30.0, 45.0)
        assert _value_near(event, centre) > np.percentile(surround, 95), pid
        postop = nib.nifti1.load(cohort_dir / pid / "mri_postop.nii.gz")
        cavity = planted["cavity"]["centre_postop_world_mm"]
        assert _value_near(postop, cavity, "min") < np.percentile(
            _shell_values(postop, cavity, 30, 45), 30
        ), pid


def test_event_to_postop_transform_maps_the_lesion(truth: dict[str, Any]) -> None:
    for planted in truth.values():
        matrix = np.asarray(planted["poses"]["event_world_to_postop_world"])
        event = np.r_[planted["lesion"]["centre_event_world_mm"], 1.0]
        np.testing.assert_allclose(
            (matrix @ event)[:3], planted["lesion"]["centre_postop_world_mm"], atol=1e-2
        )
        rotation = matrix[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-3)


# --- dose ---------------------------------------------------------------------------------------------


def _total_dose(cohort_dir: Path, pid: str, planted: dict[str, Any]) -> nib.Nifti1Image:
    image = nib.nifti1.load(cohort_dir / pid / "dose.nii.gz")
    scale = planted["n_fractions"] if planted["dose_kind"] == "fraction" else 1
    return nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32) * scale, image.affine)


def test_dose_is_plausible_and_shares_the_postop_world(cohort_dir: Path, truth: dict[str, Any]) -> None:
    for pid, planted in truth.items():
        total = _total_dose(cohort_dir, pid, planted)
        dose = np.asarray(total.dataobj)
        prescription = planted["latents"]["prescription_gy"]
        assert dose.min() >= 0.0
        assert 0.9 * prescription <= dose.max() <= 1.1 * prescription, pid
        corners = dose[np.ix_(*[[0, n - 1] for n in dose.shape])]
        assert np.all(corners == 0.0), pid  # outside the head
        lesion = planted["lesion"]
        at_lesion = _value_near(total, lesion["centre_postop_world_mm"], "mean")
        assert at_lesion == pytest.approx(lesion["dose_gy"], abs=0.1 * prescription), pid


def test_fraction_file_times_n_fractions_is_the_total(tmp_path: Path) -> None:
    rng = np.random.default_rng(np.random.SeedSequence(11, spawn_key=(0, 0)))
    spec, plan = _draw_patient(rng, "SYN-0001", SPACING)
    fraction = dataclasses.replace(spec, dose_kind="fraction")
    _write_patient(np.random.default_rng(0), tmp_path / "total", spec, plan, SPACING)
    _write_patient(np.random.default_rng(0), tmp_path / "fraction", fraction, plan, SPACING)
    total = nib.nifti1.load(tmp_path / "total" / "dose.nii.gz")
    single = nib.nifti1.load(tmp_path / "fraction" / "dose.nii.gz")
    np.testing.assert_allclose(single.affine, total.affine)
    np.testing.assert_allclose(
        np.asarray(single.dataobj) * spec.n_fractions, np.asarray(total.dataobj), rtol=1e-5, atol=1e-4
    )
    assert float(np.max(single.dataobj)) == pytest.approx(spec.latents.scheme.fraction_gy, rel=0.1)


# --- the label model ----------------------------------------------------------------------------------


def test_rice_rate_rises_with_dose_and_volume() -> None:
    table = sample_latent_table(np.random.default_rng(0), 40_000)
    prescription = table.prescription_gy
    rates = [
        table.is_rice[prescription == s.prescription_gy].mean()
        for s in sorted(SCHEMES, key=lambda s: s.eqd2_gy)
    ]
    assert all(a < b for a, b in zip(rates, rates[1:], strict=False)), rates
    volume = table.ptv_volume_cc
    small, large = volume < np.quantile(volume, 1 / 3), volume > np.quantile(volume, 2 / 3)
    assert table.is_rice[large].mean() > table.is_rice[small].mean() + 0.2
    assert table.is_rice[table.residual_tumour].mean() < table.is_rice[~table.residual_tumour].mean()
    assert 0.35 < table.is_rice.mean() < 0.6
    typical = table.presents_diffuse == table.is_rice
    assert 0.68 < typical.mean() < 0.76


def test_single_draws_follow_the_same_model() -> None:
    rng = np.random.default_rng(1)
    draws = [sample_latents(rng) for _ in range(3000)]
    hot = [d.label == "rice" for d in draws if d.scheme.prescription_gy >= 60]
    hypo = [d.label == "rice" for d in draws if d.scheme.n_fractions == 15]
    assert np.mean(hot) > np.mean(hypo) + 0.3
    assert all(0.0 < d.p_rice < 1.0 for d in draws)


def test_dose_is_the_strongest_single_channel() -> None:
    scores = {k: v["macro_f1"] for k, v in bayes_separability(n_draws=100_000).items() if k != "prevalence"}
    assert scores["dose"] > scores["event"] > scores["postop"] > 0.6
    assert scores["postop+event+dose"] >= max(scores["dose"], scores["event"], scores["postop"])
    assert scores["postop+event+dose"] < 0.95  # not trivially separable


# --- lesion placement ---------------------------------------------------------------------------------


def test_recurrence_at_the_margin_rice_away_in_high_dose() -> None:
    masks = load_masks()
    rng = np.random.default_rng(3)
    for _ in range(4):
        latents = sample_latents(rng)
        cavity = place_cavity(rng, masks, latents.cavity_radii_mm)
        assert abs(cavity.centre_mm[0]) >= 15.0  # one hemisphere
        plan = plan_dose(rng, masks, cavity, latents.ctv_margin_mm, latents.scheme.prescription_gy)
        nodule = place_nodule(rng, masks, cavity)
        assert (
            0.0 <= nodule.margin_distance_mm <= NODULE_OUTWARD_OFFSET_RANGE[1] * NODULE_RADIUS_RANGE_MM[1] + 1
        )
        diffuse = place_diffuse(rng, masks, cavity, plan.relative_dose_at)
        low, high = DIFFUSE_DISTANCE_RANGE_MM
        assert low - 1 <= diffuse.margin_distance_mm <= high + 1
        assert plan.relative_dose_at(diffuse.centre_mm) >= DIFFUSE_MIN_DOSE_FRACTION


def test_planted_lesions_follow_their_presentation(truth: dict[str, Any]) -> None:
    kinds = set()
    for planted in truth.values():
        lesion, prescription = planted["lesion"], planted["latents"]["prescription_gy"]
        assert lesion["kind"] == planted["latents"]["presentation"]
        kinds.add(lesion["kind"])
        if lesion["kind"] == "nodular":
            assert lesion["margin_distance_mm"] < 6.0
        else:
            assert lesion["margin_distance_mm"] > 9.0
            assert lesion["dose_gy"] >= DIFFUSE_MIN_DOSE_FRACTION * prescription
    assert kinds == {"nodular", "diffuse"}


def test_no_framework_imports() -> None:
    code = "import sys, rice_models.synth; assert not {'dagster', 'data_catalog'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_the_landing_validator_accepts_the_cohort(tmp_path: Path, cohort_dir: Path) -> None:
    landing = pytest.importorskip("rice_models.landing")
    copy = tmp_path / "landing"
    shutil.copytree(cohort_dir, copy)
    report = landing.validate_landing(copy)
    assert report.ok, [str(p) for p in report.problems]
    assert len(report.patients) == 6
