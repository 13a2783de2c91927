"""Gather the study report of a profile's current experiment from a RICE_HOME (lake files and the
catalog) and write it as one self-contained HTML page (`rice_models.html_report`).

Two callers: `evaluation_tables` writes `lake/evaluation_tables/<profile>/__all__/report.html` (what
was known at evaluation time: no occlusion maps or predictions yet; recorded in the catalog, logged
to MLflow), and `rice report` writes the complete page, with whatever later assets produced, to
`$RICE_HOME/reports/<profile>/report.html`.
"""

import csv
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_catalog import Catalog
from rice_models.html_report import REPORT_FILE, CohortSummary, ReportContent, class_name, write_html_report
from rice_models.landing import cohort_kind
from rice_models.paths import RicePaths
from rice_models.plots import QC_PANELS, plot_qc_summary
from rice_models.profiles import get_profile
from rice_models.provenance import code_version

FIGURES = {
    "ablation.png": "Ablation: validation F1 (mean ± sd), test F1 with its interval, the study's values",
    "roc.png": "ROC curves of the test ensembles",
    "confusion.png": "Confusion matrix of the three-channel test ensemble",
}
"""Figures of `evaluation_tables` shown beside the ablation table, with their captions."""
QC_FIGURE = "qc.png"


def complete_report_path(paths: RicePaths, profile: str) -> Path:
    """Where `rice report` writes the complete page: `$RICE_HOME/reports/<profile>/report.html`."""
    return paths.home / "reports" / profile / REPORT_FILE


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [dict(row) for row in csv.DictReader(fh)]


def _experiment(paths: RicePaths, profile: str) -> dict[str, Any]:
    path = paths.lake_dir("cv_splits", "__all__", profile) / "splits.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _manifest(paths: RicePaths) -> dict[str, Any]:
    path = paths.lake_dir("cohort_manifest") / "manifest.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {"patients": [], "problems": []}


def _problem_text(problem: dict[str, Any]) -> str:
    where = []
    if problem.get("row") is not None:
        where.append(f"cohort.csv line {problem['row']}")
    if problem.get("patient_id") is not None:
        where.append(f"patient {problem['patient_id']}")
    if problem.get("file") is not None:
        where.append(str(problem["file"]))
    return ", ".join([*where, str(problem.get("message", ""))]) if where else str(problem.get("message", ""))


def _qc_rows(store: Catalog, profile: str) -> list[dict[str, Any]]:
    rows = []
    for artifact in store.artifacts("registered_volumes", profile=profile):
        if artifact.name == "dose":
            qc = artifact.metadata
            rows.append(
                {"patient_id": artifact.partition_key}
                | {key: qc.get(key) for key, _ in QC_PANELS}
                | {"mask_method": qc.get("mask_method"), "dose_max_gy": qc.get("dose_max_gy")}
            )
    return sorted(rows, key=lambda r: str(r["patient_id"]))


def _qc_limits(profile: str) -> dict[str, list[tuple[float, str]]]:
    p = get_profile(profile)
    return {
        "ncc_event_postop": [(p.ncc_min, "warn"), (p.ncc_refuse_below, "refuse")],
        "brain_volume_ml": [(v, "warn") for v in p.brain_volume_ml]
        + [(v, "refuse") for v in p.brain_volume_refuse_ml],
        "dose_grid_brain_coverage": [(p.dose_brain_coverage_min, "refuse")],
    }


def cohort_summary(
    paths: RicePaths, store: Catalog, profile: str, experiment: dict[str, Any], figure_dir: Path, cohort: str
) -> CohortSummary:
    """Patients, labels, roles, exclusions with reasons and QC figures of the profile's experiment."""
    manifest = _manifest(paths)
    labels = experiment.get("labels", {})
    roles = {
        "development": sum(len(f["val"]) for f in experiment.get("folds", [])),
        "test": len(experiment.get("test", [])),
        "unlabelled": len(experiment.get("unlabelled", [])),
    }
    counts = Counter(str(label) for label in labels.values())
    if roles["unlabelled"]:
        counts["unlabelled"] = roles["unlabelled"]
    qc_rows = _qc_rows(store, profile)
    figures = {}
    if any(row.get(key) is not None for row in qc_rows for key, _ in QC_PANELS):
        figures["QC figures of the preprocessed patients"] = plot_qc_summary(
            qc_rows, figure_dir / QC_FIGURE, _qc_limits(profile), cohort=cohort
        )
    return CohortSummary(
        n_valid=len(manifest.get("patients", [])),
        problems=[_problem_text(p) for p in manifest.get("problems", [])],
        labels=dict(counts),
        roles=roles,
        excluded=dict(experiment.get("excluded", {})),
        qc_rows=qc_rows,
        qc_figures=figures,
    )


def _models(store: Catalog, profile: str, version: str | None) -> list[dict[str, Any]]:
    return store.query(
        "SELECT registered_name, model_version, combination, fold, alias FROM models "
        "WHERE profile = ? AND experiment_version = ? ORDER BY fold IS NOT NULL, combination, fold",
        [profile, version],
    )


def _overlays(store: Catalog, profile: str, version: str | None) -> dict[str, Path]:
    """Occlusion overlays of the current experiment's champion (older ones are left out)."""
    found = {}
    for artifact in store.artifacts("occlusion_maps", profile=profile):
        current = artifact.metadata.get("experiment_version") == version
        if artifact.name == "overlay" and current and Path(artifact.path).is_file():
            found[artifact.partition_key] = Path(artifact.path)
    return found


def _inference(store: Catalog, profile: str, version: str | None) -> list[dict[str, Any]]:
    return store.query(
        "SELECT patient_id, prob_rice, predicted FROM predictions "
        "WHERE scope = 'inference' AND profile = ? AND experiment_version = ? ORDER BY patient_id",
        [profile, version],
    )


def report_content(
    paths: RicePaths,
    store: Catalog,
    profile: str,
    *,
    later_assets: bool = True,
    figure_dir: Path | None = None,
    tables_dir: Path | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> ReportContent:
    """The report of the profile's latest evaluation, read from the lake and the catalog.

    Args:
        paths: the RICE_HOME.
        store: its catalog.
        profile: the processing profile.
        later_assets: include what assets after evaluation_tables made (champion, occlusion overlays,
            predictions of unlabelled patients); False at evaluation time, when they are not current.
        figure_dir: where the report's own figures (QC) are written (default: the evaluation's folder).
        tables_dir: where the evaluation's tables and figures are read (default: its lake folder;
            `evaluation_tables` passes its staging folder, which becomes that folder once recorded).
        step: called with the name of each part as it is gathered (progress).

    Raises:
        FileNotFoundError: no evaluation for the profile (`ablation.csv` missing).
    """
    tables = tables_dir or paths.lake_dir("evaluation_tables", "__all__", profile)
    if not (tables / "ablation.csv").is_file():
        raise FileNotFoundError(f"no evaluation at {tables}: materialise evaluation_tables first")
    experiment = _experiment(paths, profile)
    version = experiment.get("experiment_version")
    ablation = _read_csv(tables / "ablation.csv")
    step("tables")
    cohort = cohort_kind(paths.landing)
    summary = cohort_summary(paths, store, profile, experiment, figure_dir or tables, cohort)
    step("cohort and QC")
    champion = next((str(r["combination"]) for r in ablation if str(r.get("champion")) == "True"), None)
    rule = {k: ablation[0].get(k) for k in ("voting", "threshold")} if ablation else {}
    notes = []
    if not later_assets:
        notes.append(
            "Written by evaluation_tables: the champion's registration, occlusion maps and predictions come "
            "later; `rice report` writes the complete page to $RICE_HOME/reports/<profile>/report.html."
        )
    content = ReportContent(
        profile=profile,
        cohort=cohort,
        experiment_version=version,
        rule=rule,
        ablation=ablation,
        test_predictions=_read_csv(tables / "test_predictions.csv"),
        figures={caption: tables / name for name, caption in FIGURES.items() if (tables / name).is_file()},
        overlays=_overlays(store, profile, version) if later_assets else {},
        inference=_inference(store, profile, version) if later_assets else [],
        models=_models(store, profile, version),
        cohort_summary=summary,
        champion=champion,
        code_version=code_version(),
        generated_at=dt.datetime.now(dt.UTC) if later_assets else None,  # the lake's copy: inputs only
        notes=notes,
    )
    step("models, occlusion maps and predictions")
    return content


def write_report(
    paths: RicePaths,
    store: Catalog,
    profile: str,
    path: Path,
    *,
    later_assets: bool = True,
    tables_dir: Path | None = None,
    step: Callable[[str], None] = lambda _: None,
) -> tuple[Path, ReportContent]:
    """Gather (`report_content`, reading the evaluation from `tables_dir`) and write the HTML page to
    `path`; return it and what it shows."""
    content = report_content(
        paths,
        store,
        profile,
        later_assets=later_assets,
        figure_dir=path.parent,
        tables_dir=tables_dir,
        step=step,
    )
    written = write_html_report(content, path)
    step("page written")
    return written, content


REPORT_STEPS = 4
"""How many times `write_report` calls `step` (for a progress bar)."""


def outcome_lines(content: ReportContent) -> str:
    """The champion and its predictions (test patients with their true class, unlabelled patients) as
    plain lines for the terminal."""
    champion = next((m for m in content.models if m.get("alias") == "champion"), None)
    head = f"champion: {content.champion or '-'}"
    if champion:
        head += f" (models:/{champion['registered_name']}@champion, version {champion['model_version']})"
    lines = [head]
    tests = [r for r in content.test_predictions if r.get("combination") == content.champion]
    if tests:
        lines.append(f"test patients, {content.champion} ensemble: P(RICE), predicted, true class")
        for r in tests:
            pred, true = class_name(r.get("pred")), class_name(r.get("label"))
            lines.append(f"  {r['patient_id']}: {float(r['prob']):.2f}  {pred:<10}  {true}")
    if content.inference:
        lines.append("unlabelled patients, the champion's prediction: P(RICE), predicted class")
        for r in content.inference:
            lines.append(f"  {r['patient_id']}: {float(r['prob_rice']):.2f}  {r['predicted']}")
    return "\n".join(lines) + "\n"
