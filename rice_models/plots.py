"""Figures of the evaluation as PNG files: ablation bars, ROC curves, confusion matrix, occlusion overlay.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch, safe in worker processes) and written atomically (`rice_models.paths.atomic_path`).
Every function returns the path written.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from nibabel.orientations import aff2axcodes
from sklearn.metrics import roc_curve

from rice_models.channels import COMBINATIONS
from rice_models.labels import LABELS, RICE_INDEX, RICE_LABEL
from rice_models.metrics import check_labels, check_scores, confusion_counts
from rice_models.occlusion import JOINT_KEY, occlusion_peak
from rice_models.paths import atomic_path
from rice_models.report import STUDY_FIGURES, StudyFigure

DPI = 110
DOSE_LEVELS: tuple[float, ...] = (0.5, 0.95)
"""Dose contours of the occlusion overlay, as fractions of the patient's maximum dose."""
DOSE_COLOURS: tuple[str, ...] = ("#ffd92f", "#e7298a")
DOSE_NAMES: tuple[str, ...] = ("yellow", "pink")
OVERLAY_ALPHA = 0.55
OVERLAY_CMAP = "RdBu_r"
OVERLAY_HIDE_BELOW = 0.05
FLAT_MAP = 1e-6
"""A map whose largest |drop| is at most this is flat: no occluded region changes P(RICE)."""
"""Overlay voxels whose |drop| is under this share of the colour range stay transparent."""
CLASS_LABELS: tuple[str, ...] = tuple("RICE" if name == RICE_LABEL else name for name in LABELS)
"""Axis labels of the confusion matrix, in class-index order (`rice_models.labels.LABELS`)."""


SYNTHETIC_NOTE = "SYNTHETIC cohort (rice synth): planted signal, not clinical data"
"""Printed on every figure of a synthetic cohort (`cohort="synthetic"`)."""
OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def _mark_cohort(fig: Figure, cohort: str | None) -> None:
    """Say on the figure that the cohort is synthetic (nothing for a real cohort or None)."""
    if cohort == "synthetic":
        engine = fig.get_layout_engine()
        if isinstance(engine, ConstrainedLayoutEngine):
            engine.set(rect=(0.0, 0.045, 1.0, 0.955))  # keep a strip at the bottom for the note
        fig.text(0.995, 0.008, SYNTHETIC_NOTE, ha="right", va="bottom", fontsize=8, color="#b2182b")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: expected a .png file name")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _value(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    return float(v) if v is not None else float("nan")


def _ci_label(rows: Sequence[Mapping[str, Any]]) -> str:
    levels = [float(r["ci_level"]) for r in rows if r.get("ci_level") is not None]
    return f"test ensemble ({round(100 * levels[0])}% bootstrap CI)" if levels else "test ensemble"


def _study_values(keys: Sequence[str], study: Mapping[str, StudyFigure]) -> tuple[np.ndarray, np.ndarray]:
    val = [study[k].val_f1 if k in study else np.nan for k in keys]
    test = [np.nan if k not in study or study[k].test_f1 is None else study[k].test_f1 for k in keys]
    return np.array(val, dtype=np.float64), np.array(test, dtype=np.float64)


def _ablation_axes(ax: Axes, rows: Sequence[Mapping[str, Any]], study: Mapping[str, StudyFigure]) -> None:
    x = np.arange(len(rows))
    mean = np.array([_value(r, "val_f1_mean") for r in rows])
    sd = np.nan_to_num(np.array([_value(r, "val_f1_sd") for r in rows]))
    test = np.array([_value(r, "test_f1") for r in rows])
    err = np.abs(np.array([[_value(r, "test_f1_lo"), _value(r, "test_f1_hi")] for r in rows]).T - test)
    ax.bar(x - 0.2, mean, 0.36, yerr=sd, capsize=3, color="#9ecae1", label="validation (mean ± sd)")
    ax.errorbar(
        x + 0.2, test, yerr=np.nan_to_num(err), fmt="o", color="#08519c", capsize=3, label=_ci_label(rows)
    )
    keys = [str(r["combination"]) for r in rows]
    study_val, study_test = _study_values(keys, study)
    ax.scatter(x - 0.2, study_val, marker="_", s=400, color="#d95f02", zorder=3, label="study: validation")
    ax.scatter(x + 0.2, study_test, marker="*", s=120, color="#d95f02", zorder=3, label="study: test")
    ax.set_xticks(x, keys, rotation=30, ha="right")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("macro F1")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def plot_ablation(
    rows: Sequence[Mapping[str, Any]],
    path: Path | str,
    study: Mapping[str, StudyFigure] = STUDY_FIGURES,
    title: str = "Ablation by input combination",
    *,
    cohort: str | None = None,
) -> Path:
    """Bars of validation macro F1 (mean ± sd), test F1 with its interval, the study's values as markers.

    Args:
        rows: ablation rows (`rice_models.report.ablation_rows`); drawn in `COMBINATIONS` order.
        path: destination `.png`.
        study: the study's figures per combination.
        title: figure title.
        cohort: `synthetic` marks the figure as synthetic (`SYNTHETIC_NOTE`).

    Raises:
        ValueError: no rows, or a path not ending in `.png`.
    """
    if not rows:
        raise ValueError("no ablation rows to plot")
    order = {c: i for i, c in enumerate(COMBINATIONS)}
    ordered = sorted(rows, key=lambda r: order.get(str(r["combination"]), len(order)))
    fig = _new_figure(10.0, 4.5)
    ax = fig.add_subplot()
    _ablation_axes(ax, ordered, study)
    ax.set_title(title)
    _mark_cohort(fig, cohort)
    return _save(fig, path)


def plot_roc_curves(
    y_true: npt.ArrayLike,
    prob_by_combination: Mapping[str, npt.ArrayLike],
    path: Path | str,
    title: str = "Test-set ROC of the fold ensembles",
    *,
    cohort: str | None = None,
) -> Path:
    """ROC curve of each combination's test ensemble (one panel, AUC in the legend), the chance
    diagonal, and the number of test patients of each class in the title.

    With one class in `y_true` no curve exists; the figure then says so instead.

    Args:
        y_true: true class index per test patient.
        prob_by_combination: combination -> ensemble P(RICE) per test patient (a majority vote's share
            of votes gives a curve with at most n_folds + 1 steps).
        path: destination `.png`.
        title: figure title.
        cohort: `synthetic` marks the figure as synthetic.

    Raises:
        ValueError: no combinations, invalid labels or probabilities, or a path not ending in `.png`.
    """
    t = check_labels(y_true)
    if not prob_by_combination:
        raise ValueError("no combinations to plot")
    fig = _new_figure(5.5, 5.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance (AUC 0.50)")
    if np.unique(t).size < 2:
        ax.text(0.5, 0.5, "ROC undefined: one class in the test set", ha="center", va="center")
    else:
        for name, prob in prob_by_combination.items():
            fpr, tpr, _ = roc_curve(t, check_scores(prob, t.size))
            ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {np.trapezoid(tpr, fpr):.2f})")
    ax.legend(loc="lower right", fontsize=8)
    n_rice = int(np.sum(t == RICE_INDEX))
    counts = f"n = {t.size} test patients ({n_rice} RICE, {t.size - n_rice} {LABELS[1 - RICE_INDEX]})"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity (RICE)")
    ax.set_title(f"{title}\n{counts}", fontsize=10)
    _mark_cohort(fig, cohort)
    return _save(fig, path)


def plot_confusion_matrix(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    path: Path | str,
    title: str = "Test-set confusion matrix",
    *,
    cohort: str | None = None,
) -> Path:
    """2x2 confusion matrix (rows: true class, columns: predicted), counts written in the cells.

    Args:
        y_true: true class index per patient.
        y_pred: predicted class index per patient.
        path: destination `.png`.
        title: figure title.
        cohort: `synthetic` marks the figure as synthetic.

    Raises:
        ValueError: invalid labels, or a path not ending in `.png`.
    """
    c = confusion_counts(y_true, y_pred)
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig = _new_figure(4.2, 3.8)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(1, int(matrix.max())))
    for (i, j), n in np.ndenumerate(matrix):
        colour = "white" if n > matrix.max() / 2 else "black"
        ax.text(j, i, str(n), ha="center", va="center", color=colour, fontsize=14)
    ax.set_xticks(range(len(CLASS_LABELS)), CLASS_LABELS)
    ax.set_yticks(range(len(CLASS_LABELS)), CLASS_LABELS)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title} (n = {int(matrix.sum())})")
    _mark_cohort(fig, cohort)
    return _save(fig, path)


def _planes(volume: np.ndarray, peak: tuple[int, int, int]) -> list[np.ndarray]:
    """Sagittal, coronal, axial slices through `peak` (voxel axes 0, 1, 2 held fixed in turn),
    transposed for display with `origin="lower"`: the higher voxel axis runs up, the lower across."""
    i, j, k = peak
    return [volume[i, :, :].T, volume[:, j, :].T, volume[:, :, k].T]


PLANE_AXES: tuple[tuple[int, int], ...] = ((1, 2), (0, 2), (0, 1))
"""(across, up) voxel axes of each panel of `_planes`."""


def axis_codes(affine: npt.ArrayLike | None) -> tuple[str, str, str]:
    """The anatomical direction each voxel axis increases towards (e.g. ("R", "A", "S") for RAS+),
    from a 4x4 affine (nibabel's `aff2axcodes`); None means RAS+ (rice's canonical grid).

    Raises:
        ValueError: not a 4x4 affine.
    """
    if affine is None:
        return ("R", "A", "S")
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {a.shape}")
    i, j, k = (str(c) for c in aff2axcodes(a))
    return i, j, k


def _plane_name(codes: tuple[str, str, str], fixed: int) -> str:
    """The anatomical name of the slice that holds voxel axis `fixed` constant."""
    kind = {"R": "sagittal", "L": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}
    return kind.get(codes[fixed], f"axis {fixed}")


def _orientation_letters(ax: Axes, codes: tuple[str, str, str], across: int, up: int) -> None:
    """Letters at the panel's edges: where each displayed axis points in the patient."""
    style: dict[str, Any] = {"color": "white", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
    ax.text(0.02, 0.5, OPPOSITE[codes[across]], ha="left", va="center", **style)
    ax.text(0.98, 0.5, codes[across], ha="right", va="center", **style)
    ax.text(0.5, 0.02, OPPOSITE[codes[up]], ha="center", va="bottom", **style)
    ax.text(0.5, 0.98, codes[up], ha="center", va="top", **style)


def _overlay_panel(
    ax: Axes, bg: np.ndarray, occ: np.ndarray, dose: np.ndarray, dose_max: float, vmax: float
) -> None:
    """One slice: MRI in grey, the map in colour (near-zero transparent), dose contours."""
    ax.imshow(bg, cmap="gray", origin="lower")
    shown = np.ma.masked_where(np.abs(occ) < OVERLAY_HIDE_BELOW * vmax, occ)
    ax.imshow(shown, cmap=OVERLAY_CMAP, vmin=-vmax, vmax=vmax, alpha=OVERLAY_ALPHA, origin="lower")
    contours = [(f * dose_max, c) for f, c in zip(DOSE_LEVELS, DOSE_COLOURS, strict=True)]
    inside = [(level, c) for level, c in contours if dose.min() < level < dose.max()]
    if inside:
        ax.contour(dose, levels=[lv for lv, _ in inside], colors=[c for _, c in inside], linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def _check_volumes(maps: Mapping[str, np.ndarray], background: np.ndarray, dose: np.ndarray) -> None:
    shapes = {m.shape for m in maps.values()} | {background.shape, dose.shape}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"maps, background and dose must share one 3D shape, got {sorted(shapes)}")


def _prediction_line(p_rice: float | None, predicted: str | None) -> str:
    """`P(RICE) 0.80, predicted RICE` (the parts that are known)."""
    parts = []
    if p_rice is not None:
        parts.append(f"P(RICE) {p_rice:.2f}")
    if predicted is not None:
        parts.append(f"predicted {'RICE' if predicted == RICE_LABEL else predicted}")
    return ", ".join(parts)


def plot_occlusion_overlay(
    maps: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
    background: npt.ArrayLike,
    dose: npt.ArrayLike,
    path: Path | str,
    title: str = "Occlusion sensitivity (drop in P(RICE))",
    *,
    affine: npt.ArrayLike | None = None,
    p_rice: float | None = None,
    predicted: str | None = None,
    cohort: str | None = None,
) -> Path:
    """Three orthogonal slices through the centre of the first map's peak over the post-op MRI, with
    dose contours, orientation letters and the model's prediction.

    One row per map (e.g. all channels, then each channel), all cut through the same voxel: the centre
    of the region of the first map's largest |drop| (`occlusion_peak`); one symmetric colour scale for
    all rows (red: the region supports RICE, blue: recurrence). Dose contours at `DOSE_LEVELS` of the
    maximum dose (yellow 50%, pink 95%), the maximum stated in Gy. Each panel's edges carry the
    patient directions (R/L, A/P, S/I) of the grid given by `affine`.

    Args:
        maps: name -> (D, H, W) occlusion map, or one map (named "all").
        background: (D, H, W) post-op MRI on the same grid.
        dose: (D, H, W) dose in Gy on the same grid.
        path: destination `.png`.
        title: figure title (e.g. the patient and the combination).
        affine: 4x4 voxel-to-world affine of the grid (None: RAS+ axes, as rice's volumes).
        p_rice: the model's P(RICE) for this patient (stated in the title).
        predicted: the class the decision rule gives (`rice` or `recurrence`; stated in the title).
        cohort: `synthetic` marks the figure as synthetic.

    Raises:
        ValueError: no map, shapes that differ or are not 3D, a bad affine, or a path not ending in `.png`.
    """
    named = dict(maps) if isinstance(maps, Mapping) else {JOINT_KEY: maps}
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in named.items()}
    if not arrays:
        raise ValueError("no occlusion map to plot")
    bg, d = np.asarray(background, dtype=np.float32), np.asarray(dose, dtype=np.float32)
    _check_volumes(arrays, bg, d)
    codes = axis_codes(affine)
    peak = occlusion_peak(next(iter(arrays.values())))
    vmax = max(max(float(np.abs(m).max()) for m in arrays.values()), FLAT_MAP)
    fig = _new_figure(9.0, 3.0 * len(arrays) + 1.0)
    axes = fig.subplots(len(arrays), 3, squeeze=False)
    slices = list(zip(_planes(bg, peak), _planes(d, peak), strict=True))
    for row, (name, occ) in zip(axes, arrays.items(), strict=True):
        for ax, (bg_slice, dose_slice), occ_slice, (across, up) in zip(
            row, slices, _planes(occ, peak), PLANE_AXES, strict=True
        ):
            _overlay_panel(ax, bg_slice, occ_slice, dose_slice, float(d.max()), vmax)
            _orientation_letters(ax, codes, across, up)
        row[0].set_ylabel(name)
    for fixed, (ax, index) in enumerate(zip(axes[0], peak, strict=True)):
        ax.set_title(f"{_plane_name(codes, fixed)} (voxel axis {fixed} = {index})", fontsize=9)
    scale = ScalarMappable(Normalize(-vmax, vmax), cmap=OVERLAY_CMAP)
    fig.colorbar(scale, ax=axes, shrink=0.8, label="drop in P(RICE) when occluded (red: supports RICE)")
    if vmax <= FLAT_MAP:
        fig.text(
            0.5,
            0.5,
            "flat map: occluding any region leaves P(RICE) unchanged",
            ha="center",
            va="center",
            fontsize=11,
            color="#b2182b",
            bbox={"facecolor": "white", "alpha": 0.8},
        )
    prediction = _prediction_line(p_rice, predicted)
    fig.suptitle(f"{title}\n{prediction}" if prediction else title)
    levels = ", ".join(f"{round(100 * f)}% ({c})" for f, c in zip(DOSE_LEVELS, DOSE_NAMES, strict=True))
    fig.supxlabel(
        f"dose contours at {levels} of the maximum dose, {float(d.max()):.1f} Gy; "
        "slices through the centre of the peak region",
        fontsize=9,
    )
    _mark_cohort(fig, cohort)
    return _save(fig, path)


QC_PANELS: tuple[tuple[str, str], ...] = (
    ("ncc_event_postop", "NCC, event vs post-op MRI"),
    ("brain_volume_ml", "brain mask volume (ml)"),
    ("dose_grid_brain_coverage", "dose grid coverage of the brain"),
)
"""QC figures of `plot_qc_summary`: the `registered_volumes` metadata key and its axis label."""


def plot_qc_summary(
    rows: Sequence[Mapping[str, Any]],
    path: Path | str,
    limits: Mapping[str, Sequence[tuple[float, str]]] | None = None,
    *,
    cohort: str | None = None,
) -> Path:
    """One dot per patient for each preprocessing QC figure (`QC_PANELS`), with the profile's limits
    as dashed lines, so outliers and patients near a threshold stand out.

    Args:
        rows: per patient: `patient_id` and the QC keys of `QC_PANELS` (missing values skipped).
        path: destination `.png`.
        limits: QC key -> (value, label) lines, e.g. {"ncc_event_postop": [(0.5, "warn")]}.
        cohort: `synthetic` marks the figure as synthetic.

    Raises:
        ValueError: no rows, or a path not ending in `.png`.
    """
    if not rows:
        raise ValueError("no QC rows to plot")
    fig = _new_figure(10.0, 3.4)
    axes = fig.subplots(1, len(QC_PANELS), squeeze=False)[0]
    rng = np.random.default_rng(0)  # horizontal jitter only, so overlapping dots separate
    for ax, (key, label) in zip(axes, QC_PANELS, strict=True):
        values = np.array([float(r[key]) for r in rows if r.get(key) is not None], dtype=np.float64)
        ax.scatter(rng.uniform(-0.2, 0.2, values.size), values, s=14, color="#2171b5", alpha=0.8)
        for value, name in (limits or {}).get(key, ()):
            ax.axhline(value, ls="--", lw=1, color="#d95f02")
            ax.text(0.22, value, f" {name}", va="bottom", fontsize=7, color="#d95f02")
        ax.set_xlim(-0.5, 0.5)
        ax.set_xticks([])
        ax.set_title(f"{label}\nn = {values.size}", fontsize=9)
    fig.suptitle("Preprocessing quality control (registered_volumes), one dot per patient", fontsize=10)
    _mark_cohort(fig, cohort)
    return _save(fig, path)
