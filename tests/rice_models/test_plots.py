"""Tests of rice_models.plots: each figure is written as a non-empty PNG of sensible size."""

import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from rice_models.channels import COMBINATIONS
from rice_models.plots import (
    SYNTHETIC_NOTE,
    axis_codes,
    plot_ablation,
    plot_confusion_matrix,
    plot_occlusion_overlay,
    plot_qc_summary,
    plot_roc_curves,
)
from rice_models.report import ablation_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Y_TEST = np.array([0, 1, 0, 1, 1, 0, 1, 0, 1, 0])


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE
    return struct.unpack(">II", head[16:24])


def assert_sensible_png(path: Path, min_bytes: int = 5_000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes
    width, height = png_size(path)
    assert 300 <= width <= 3000 and 250 <= height <= 3000
    assert not list(path.parent.glob(".*tmp*"))  # atomic write left no temp file


def _probs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(0.6 * Y_TEST + 0.4 * rng.random((5, Y_TEST.size)), 0, 1)


def test_ablation_chart(tmp_path: Path) -> None:
    val = {c: [0.6, 0.7, 0.65, 0.8, 0.75] for c in COMBINATIONS}
    rows = ablation_rows(val, {c: _probs(i) for i, c in enumerate(COMBINATIONS)}, Y_TEST, n_boot=100)
    assert_sensible_png(plot_ablation(rows, tmp_path / "ablation.png"))
    partial = ablation_rows({"dose": [0.8]}, {}, None)  # no test figures, one fold: still drawn
    assert_sensible_png(plot_ablation(partial, tmp_path / "partial.png"))


def test_roc_curves(tmp_path: Path) -> None:
    probs = {c: _probs(i).mean(axis=0) for i, c in enumerate(COMBINATIONS)}
    assert_sensible_png(plot_roc_curves(Y_TEST, probs, tmp_path / "roc.png"))
    one_class = plot_roc_curves(np.ones(3, dtype=int), {"dose": [0.2, 0.6, 0.9]}, tmp_path / "one.png")
    assert_sensible_png(one_class)


def test_confusion_matrix(tmp_path: Path) -> None:
    path = plot_confusion_matrix(Y_TEST, (_probs(0).mean(axis=0) > 0.5).astype(int), tmp_path / "cm.png")
    assert_sensible_png(path)


def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij")).astype(np.float32)
    mri = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    dose = 60.0 * np.exp(-np.sum((grid - 8.0) ** 2, axis=0) / 30.0)  # a Gaussian dose cloud in Gy
    occ = np.zeros((16, 16, 16), dtype=np.float32)
    occ[6:10, 5:9, 7:11] = 0.3
    occ[12:14, 12:14, 2:4] = -0.1
    return occ, mri, dose


def test_occlusion_overlay(tmp_path: Path) -> None:
    occ, mri, dose = _volumes()
    assert_sensible_png(plot_occlusion_overlay(occ, mri, dose, tmp_path / "one.png"))
    maps = {"all": occ, "mri_postop": occ * 0.5, "dose": np.zeros_like(occ)}
    assert_sensible_png(plot_occlusion_overlay(maps, mri, dose, tmp_path / "per_channel.png"))
    flat = plot_occlusion_overlay(np.zeros_like(occ), mri, np.zeros_like(dose), tmp_path / "flat.png")
    assert_sensible_png(flat, min_bytes=1_000)


@pytest.mark.parametrize("bad", ["shape", "suffix", "empty"])
def test_occlusion_overlay_rejects(tmp_path: Path, bad: str) -> None:
    occ, mri, dose = _volumes()
    with pytest.raises(ValueError):
        if bad == "shape":
            plot_occlusion_overlay(occ, mri[:8], dose, tmp_path / "x.png")
        elif bad == "suffix":
            plot_occlusion_overlay(occ, mri, dose, tmp_path / "x.jpg")
        else:
            plot_occlusion_overlay({}, mri, dose, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_occlusion_overlay_states_prediction_units_and_orientation(tmp_path: Path) -> None:
    occ, mri, dose = _volumes()
    lps = np.diag([-2.0, -2.0, 2.0, 1.0])  # a grid stored LPS: the letters follow the affine
    assert axis_codes(lps) == ("L", "P", "S") and axis_codes(None) == ("R", "A", "S")
    path = plot_occlusion_overlay(
        occ, mri, dose, tmp_path / "o.png", "P1", affine=lps, p_rice=0.8, predicted="rice", cohort="synthetic"
    )
    assert_sensible_png(path)
    with pytest.raises(ValueError):
        plot_occlusion_overlay(occ, mri, dose, tmp_path / "x.png", affine=np.eye(3))


def test_overlay_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The words on the overlay: P(RICE), class, Gy, orientation letters, synthetic, the peak's centre."""
    texts: list[str] = []
    real_savefig = Figure.savefig

    def spy(fig: Figure, *args, **kwargs) -> None:
        texts.extend(t.get_text() for t in fig.findobj(Text))
        real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    occ, mri, dose = _volumes()
    plot_occlusion_overlay(
        occ, mri, dose, tmp_path / "o.png", "P1", p_rice=0.8, predicted="rice", cohort="synthetic"
    )
    joined = "\n".join(texts)
    assert "P(RICE) 0.80, predicted RICE" in joined
    assert f"{dose.max():.1f} Gy" in joined
    assert {"R", "L", "A", "P", "S", "I"} <= set(texts)
    assert SYNTHETIC_NOTE in texts
    assert "sagittal (voxel axis 0 = 7)" in joined  # the middle of the 6..9 plateau, not its corner (6)
    texts.clear()
    plot_roc_curves(Y_TEST, {"dose": _probs(0).mean(axis=0)}, tmp_path / "roc.png")
    joined = "\n".join(texts)
    assert "chance (AUC 0.50)" in joined and "n = 10 test patients (5 RICE, 5 recurrence)" in joined
    assert SYNTHETIC_NOTE not in texts


def test_qc_summary(tmp_path: Path) -> None:
    rows = [
        {
            "patient_id": f"P{i}",
            "ncc_event_postop": 0.9,
            "brain_volume_ml": 1400.0 + i,
            "dose_grid_brain_coverage": 1.0,
        }
        for i in range(5)
    ] + [{"patient_id": "P9", "ncc_event_postop": None}]
    limits = {"ncc_event_postop": [(0.5, "warn"), (0.2, "refuse")]}
    assert_sensible_png(plot_qc_summary(rows, tmp_path / "qc.png", limits, cohort="synthetic"))
    with pytest.raises(ValueError):
        plot_qc_summary([], tmp_path / "none.png")
