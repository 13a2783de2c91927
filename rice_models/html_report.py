"""The study report as one self-contained HTML page: every figure inlined as a base64 PNG, styles
inline, no script and no link to fetch, so it opens offline and can be sent as one file.

What it shows (`ReportContent`): the profile, cohort kind and experiment version; the ablation table
beside the study's figures with intervals; the ablation, ROC and confusion figures; the per-patient
test predictions; the occlusion overlays of the test patients; the champion's predictions of the
unlabelled patients; the cohort (patients, labels, exclusions with reasons, QC figures); the model
versions; and, for a synthetic cohort, its generative model (`docs/synthetic_cohort.md`).

`render_html` builds the page from plain data; gathering that data from a RICE_HOME (lake, catalog)
is the Dagster layer's job (`rice_assets.html_report`).
"""

import base64
import dataclasses
import datetime as dt
import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rice_models.channels import COMBINATIONS
from rice_models.labels import label_name
from rice_models.paths import write_text_atomic
from rice_models.report import (
    STUDY_FIGURES,
    STUDY_REFERENCE,
    format_interval,
    format_number,
    format_study,
)

REPORT_FILE = "report.html"
SYNTHETIC_DOC = Path(__file__).resolve().parents[1] / "docs" / "synthetic_cohort.md"
"""The synthetic cohort's generative model, shown in the report of a synthetic cohort (a source
checkout has it; an installed wheel may not, and the report then says where to read it)."""

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr.champion td{background:#fff6d5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.side{display:flex;flex-wrap:wrap;gap:1.2rem;align-items:flex-start}
.side>div{flex:1 1 520px}figure{margin:.5rem 0}figcaption{font-size:.85rem;color:#555}
img{max-width:100%;height:auto;border:1px solid #eee}
.banner{background:#b2182b;color:#fff;padding:.5rem .8rem;border-radius:4px;font-weight:600}
.banner code{background:transparent;color:#fff}
.meta td:first-child{font-weight:600;white-space:nowrap}code{background:#f4f4f4;padding:0 .2rem}
.doc{border-left:4px solid #ddd;padding-left:1rem}.muted{color:#666}
.overlays{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1rem}
"""


@dataclasses.dataclass(frozen=True)
class CohortSummary:
    """The cohort behind the report.

    Attributes:
        n_valid: patients that passed landing-zone validation (`cohort_manifest`).
        problems: every validation problem, as `rice validate` prints it.
        labels: label (`rice`, `recurrence`, `unlabelled`) -> patients in the experiment.
        roles: `test`, `development`, `unlabelled` -> patients in the experiment's split.
        excluded: patient -> why it is not in the experiment (QC, rejected input).
        qc_rows: per preprocessed patient: `patient_id` and its QC figures (NCC, brain volume, ...).
        qc_figures: caption -> PNG of the QC figures.
    """

    n_valid: int
    problems: Sequence[str] = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    roles: Mapping[str, int] = dataclasses.field(default_factory=dict)
    excluded: Mapping[str, str] = dataclasses.field(default_factory=dict)
    qc_rows: Sequence[Mapping[str, Any]] = ()
    qc_figures: Mapping[str, Path] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ReportContent:
    """Everything the HTML report shows (plain data; paths of PNG files to inline).

    Attributes:
        profile: processing profile name.
        cohort: `synthetic` or `real`.
        experiment_version: the experiment every figure belongs to.
        rule: the decision rule (`voting`, `threshold`).
        ablation: rows of `rice_models.report.ablation_rows` (or the `ablation.csv` read back).
        test_predictions: per test patient and combination: `patient_id`, `combination`, `prob`
            (ensemble P(RICE)), `pred` / `label` (class names or indices).
        figures: caption -> PNG (ablation, ROC, confusion).
        overlays: test patient -> occlusion overlay PNG of the current champion.
        inference: the champion's predictions of unlabelled patients: `patient_id`, `prob_rice`,
            `predicted`.
        models: registered model versions: `registered_name`, `model_version`, `combination`,
            `fold`, `alias`.
        cohort_summary: see `CohortSummary`.
        champion: the champion combination.
        code_version: the rice version (package and git commit) that wrote the report.
        generated_at: when (UTC), shown when given; None for a lake artifact, whose bytes must depend on
            its inputs only (a re-run gives the same checksum).
        notes: extra lines shown under the title (e.g. what is not computed yet).
    """

    profile: str
    cohort: str
    experiment_version: str | None
    rule: Mapping[str, Any]
    ablation: Sequence[Mapping[str, Any]]
    test_predictions: Sequence[Mapping[str, Any]]
    figures: Mapping[str, Path]
    overlays: Mapping[str, Path]
    inference: Sequence[Mapping[str, Any]]
    models: Sequence[Mapping[str, Any]]
    cohort_summary: CohortSummary
    champion: str | None = None
    code_version: str = ""
    generated_at: dt.datetime | None = None
    notes: Sequence[str] = ()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def image_tag(path: Path, alt: str) -> str:
    """An `<img>` holding the PNG itself as a base64 data URI (no file or network needed to show it)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figure(path: Path, caption: str) -> str:
    return f"<figure>{image_tag(path, caption)}<figcaption>{_e(caption)}</figcaption></figure>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], row_class: Sequence[str] = ()) -> str:
    """A table of already-escaped cells."""
    heads = "".join(f"<th>{h}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if i < len(row_class) and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{heads}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def ablation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The 7-row ablation table beside the study's figures (HTML); combinations not run say so."""
    by_key = {str(r["combination"]): r for r in rows}
    head = [
        "Combination",
        "Val F1, best epoch (mean ± sd)",
        "Out-of-fold F1 [95% CI]",
        "Out-of-fold AUC",
        "Test F1 [95% CI]",
        "n test",
        "Study val F1",
        "Study test F1",
    ]
    cells, classes = [], []
    for combination in COMBINATIONS:
        study = STUDY_FIGURES[combination]
        study_cells = [format_study(study.val_f1), format_study(study.test_f1)]
        row = by_key.get(combination)
        if row is None:
            cells.append([f"<code>{combination}</code>", *["not run"] * 5, *study_cells])
            classes.append("")
            continue
        champion = _truthy(row.get("champion"))
        val = (
            "–" if format_number(row.get("val_f1_mean")) == "–" else f"{format_number(row['val_f1_mean'])} ± "
        )
        val += format_number(row.get("val_f1_sd")) if val != "–" else ""
        name = f"<code>{combination}</code>" + (" (champion)" if champion else "")
        n_test = _e(row.get("n_test")) if row.get("n_test") not in (None, "") else "–"
        cells.append(
            [
                name,
                val,
                format_interval(row, "oof_f1"),
                format_number(row.get("oof_auc"), 2),
                format_interval(row, "test_f1"),
                n_test,
                *study_cells,
            ]
        )
        classes.append("champion" if champion else "")
    return _table(head, cells, classes)


def class_name(value: Any) -> str:
    """A class index or name as the class name (`rice`, `recurrence`); empty or None: `–`."""
    if value is None or value == "":
        return "–"
    try:
        return label_name(int(value))
    except (TypeError, ValueError):
        return str(value)


def predictions_table(rows: Sequence[Mapping[str, Any]], combination: str | None) -> str:
    """Per test patient: the ensemble P(RICE), the predicted and the true class (one combination, or
    every combination when None)."""
    shown = [r for r in rows if combination is None or r.get("combination") == combination]
    head = ["Patient", "Combination", "P(RICE)", "Predicted", "True", "Correct"]
    cells = []
    for r in sorted(shown, key=lambda r: (str(r.get("patient_id")), str(r.get("combination")))):
        predicted, true = class_name(r.get("pred")), class_name(r.get("label"))
        correct = "–" if true == "–" else ("yes" if predicted == true else "no")
        cells.append(
            [
                _e(r.get("patient_id")),
                _e(r.get("combination")),
                format_number(r.get("prob"), 2),
                predicted,
                true,
                correct,
            ]
        )
    return _table(head, cells)


def _metadata_table(content: ReportContent) -> str:
    rule = content.rule or {}
    rows = [
        ("Profile", f"<code>{_e(content.profile)}</code>"),
        ("Cohort", _e(content.cohort)),
        ("Experiment version", f"<code>{_e(content.experiment_version or '–')}</code>"),
        ("Champion", f"<code>{_e(content.champion or '–')}</code> (best pooled out-of-fold macro F1)"),
        (
            "Decision rule",
            f"{_e(rule.get('voting', '–'))} voting of the fold models, RICE when P(RICE) &gt; "
            f"{_e(rule.get('threshold', '–'))}",
        ),
        ("Study", _e(STUDY_REFERENCE)),
        ("Written by", _e(content.code_version or "rice")),
    ]
    if content.generated_at is not None:
        rows.append(("Generated", _e(f"{content.generated_at:%Y-%m-%d %H:%M:%S} UTC")))
    body = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _inference_section(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return (
            "<p class='muted'>No unlabelled patient has been predicted (none in the cohort, or "
            "<code>patient_predictions</code> not materialised yet).</p>"
        )
    cells = [
        [_e(r.get("patient_id")), format_number(r.get("prob_rice"), 2), _e(class_name(r.get("predicted")))]
        for r in sorted(rows, key=lambda r: str(r.get("patient_id")))
    ]
    return _table(["Patient", "P(RICE)", "Predicted"], cells)


def _overlay_section(overlays: Mapping[str, Path]) -> str:
    if not overlays:
        return (
            "<p class='muted'>No occlusion map of the current champion yet: materialise "
            "<code>occlusion_maps</code> (as <code>rice run</code> does), then <code>rice report</code> "
            "writes this page again with them.</p>"
        )
    figures = "".join(_figure(path, f"{pid}: occlusion overlay") for pid, path in sorted(overlays.items()))
    return (
        "<p>Drop in P(RICE) when a cube of the input is occluded (red: the region supports RICE, blue: "
        "recurrence), three orthogonal slices through the centre of the peak region over the post-op "
        "MRI, dose contours at 50% and 95% of the maximum dose (Gy).</p>"
        f"<div class='overlays'>{figures}</div>"
    )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_e(k)} {v}" for k, v in counts.items()) or "–"


def _qc_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "patient_id"]
    cells = [
        [_e(r.get("patient_id"))]
        + [format_number(r.get(k), 2) if format_number(r.get(k)) != "–" else _e(r.get(k)) for k in keys]
        for r in rows
    ]
    return (
        "<details><summary>QC figures per patient</summary>"
        + _table(["Patient", *(_e(k) for k in keys)], cells)
        + "</details>"
    )


def _cohort_section(summary: CohortSummary) -> str:
    parts = [
        f"<p>{summary.n_valid} valid patient(s) in the landing zone; in the experiment: "
        f"{_counts(summary.roles)}; labels: {_counts(summary.labels)}.</p>"
    ]
    if summary.excluded:
        rows = [[_e(p), _e(r)] for p, r in sorted(summary.excluded.items())]
        parts.append("<h3>Excluded from the experiment</h3>" + _table(["Patient", "Why"], rows))
    else:
        parts.append("<p>No patient excluded: every active patient passed its blocking QC checks.</p>")
    if summary.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in summary.problems)
        parts.append(f"<h3>Rejected by validation (<code>rice validate</code>)</h3><ul>{items}</ul>")
    figures = "".join(_figure(path, caption) for caption, path in summary.qc_figures.items())
    if figures or summary.qc_rows:
        parts.append(f"<h3>Quality control</h3><div class='side'>{figures}</div>{_qc_table(summary.qc_rows)}")
    return "".join(parts)


def _models_section(models: Sequence[Mapping[str, Any]]) -> str:
    if not models:
        return "<p class='muted'>No registered model recorded for this experiment.</p>"
    cells = [
        [
            _e(m.get("registered_name")),
            _e(m.get("model_version")),
            _e(m.get("combination")),
            "–" if m.get("fold") is None else _e(m.get("fold")),
            _e(m.get("alias") or ""),
        ]
        for m in models
    ]
    return "<p>MLflow registered models behind this report.</p>" + _table(
        ["Registered model", "Version", "Combination", "Fold", "Alias"], cells
    )


_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![*\w])\*([^*\n]+)\*(?!\w)"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)]+)\)"), r"\1 (\2)"),
]


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _md_table(lines: list[str]) -> str:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
    return _table([_inline(c) for c in rows[0]], [[_inline(c) for c in r] for r in body])


def markdown_to_html(text: str) -> str:
    """A small Markdown subset (headings, paragraphs, lists, tables, fenced code, inline code, bold,
    italics, links as text) as HTML: enough for the project's own docs, with no dependency."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append("<pre>" + html.escape("\n".join(lines[i + 1 : end])) + "</pre>")
            i = end + 1
        elif m := re.match(r"(#{1,6}) (.*)", line):
            level = min(len(m.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            end = next((j for j in range(i, len(lines)) if not lines[j].lstrip().startswith("|")), len(lines))
            out.append(_md_table(lines[i:end]))
            i = end
        elif re.match(r"\s*([-*]|\d+\.) ", line):
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                if re.match(r"\s*([-*]|\d+\.) ", lines[i]):
                    items.append(re.sub(r"\s*([-*]|\d+\.) ", "", lines[i], count=1))
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        elif not line.strip():
            i += 1
        else:
            para = []
            while (
                i < len(lines)
                and lines[i].strip()
                and not re.match(r"(#|```|\s*\||\s*([-*]|\d+\.) )", lines[i])
            ):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def _synthetic_section(cohort: str) -> str:
    if cohort != "synthetic":
        return ""
    if SYNTHETIC_DOC.is_file():
        body = markdown_to_html(SYNTHETIC_DOC.read_text())
    else:
        body = "<p>See <code>docs/synthetic_cohort.md</code> in the rice source.</p>"
    return (
        "<h2 id='generative-model'>The synthetic cohort's generative model</h2>"
        "<p>The figures above measure how much of this planted signal the pipeline recovers, not "
        f"clinical performance.</p><div class='doc'>{body}</div>"
    )


def render_html(content: ReportContent) -> str:
    """The whole report as one HTML document (UTF-8 text, no external resource).

    Raises:
        OSError: a figure's PNG cannot be read.
    """
    title = f"rice report: profile {content.profile}, experiment {content.experiment_version or '–'}"
    banner = (
        "<p class='banner'>Synthetic cohort (written by <code>rice synth</code>): planted signal, not "
        "clinical data.</p>"
        if content.cohort == "synthetic"
        else ""
    )
    notes = "".join(f"<p class='muted'>{_e(n)}</p>" for n in content.notes)
    figures = "".join(_figure(path, caption) for caption, path in content.figures.items())
    sections = [
        f"<h1>RICE vs tumour recurrence: the study report</h1>{banner}{notes}",
        _metadata_table(content),
        "<h2 id='ablation'>Ablation: macro F1 by input combination</h2>"
        "<p>Validation: the study's figure, each fold's best-epoch macro F1 (optimistic). Out-of-fold: "
        "every development patient predicted once by the fold model that did not train on it (the "
        "champion is chosen on it). Test: the fold ensemble on the independent test set by the decision "
        "rule. Intervals: 95% bootstrap over patients.</p>"
        f"<div class='side'><div>{ablation_table(content.ablation)}</div><div>{figures}</div></div>",
        "<h2 id='test-predictions'>Test patients: predictions</h2>"
        + predictions_table(content.test_predictions, content.champion)
        + "<details><summary>Every combination</summary>"
        + predictions_table(content.test_predictions, None)
        + "</details>",
        "<h2 id='occlusion'>Occlusion maps of the test patients</h2>" + _overlay_section(content.overlays),
        "<h2 id='inference'>Unlabelled patients: the champion's predictions</h2>"
        + _inference_section(content.inference),
        "<h2 id='cohort'>Cohort</h2>" + _cohort_section(content.cohort_summary),
        "<h2 id='models'>Model versions</h2>" + _models_section(content.models),
        _synthetic_section(content.cohort),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_html_report(content: ReportContent, path: Path) -> Path:
    """Write `render_html(content)` atomically to `path` (e.g. `.../report.html`); return it."""
    return write_text_atomic(path, render_html(content))
