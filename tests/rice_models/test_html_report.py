"""Tests of rice_models.html_report: one self-contained page with every section, figures inlined."""

import base64
import dataclasses
import datetime as dt
import re
from pathlib import Path

import numpy as np

from rice_models.channels import COMBINATIONS
from rice_models.html_report import (
    CohortSummary,
    ReportContent,
    markdown_to_html,
    render_html,
    write_html_report,
)
from rice_models.plots import plot_ablation, plot_roc_curves
from rice_models.report import ablation_rows

Y = np.array([0, 1, 0, 1, 1, 0])


def _content(tmp_path: Path, cohort: str = "synthetic") -> ReportContent:
    probs = np.clip(0.6 * Y + 0.3 * np.random.default_rng(0).random((5, Y.size)), 0, 1)
    rows = ablation_rows({"dose": [0.7, 0.8, 0.6, 0.7, 0.75]}, {"dose": probs}, Y, n_boot=50, champion="dose")
    figures = {
        "Ablation": plot_ablation(rows, tmp_path / "ablation.png"),
        "ROC": plot_roc_curves(Y, {"dose": probs.mean(axis=0)}, tmp_path / "roc.png"),
    }
    predictions = [
        {"patient_id": f"T{i}", "combination": "dose", "prob": p, "pred": int(p > 0.5), "label": int(y)}
        for i, (p, y) in enumerate(zip(probs.mean(axis=0), Y, strict=True))
    ]
    return ReportContent(
        profile="quick",
        cohort=cohort,
        experiment_version="0123456789abcdef",
        rule={"voting": "majority", "threshold": 0.5},
        ablation=rows,
        test_predictions=predictions,
        figures=figures,
        overlays={"T0": figures["ROC"]},
        inference=[{"patient_id": "U1", "prob_rice": 0.8, "predicted": "rice"}],
        models=[
            {
                "registered_name": "rice-net-champion-quick",
                "model_version": "3",
                "combination": "dose",
                "fold": None,
                "alias": "champion",
            },
            {
                "registered_name": "rice-net-quick",
                "model_version": "7",
                "combination": "dose",
                "fold": 0,
                "alias": None,
            },
        ],
        cohort_summary=CohortSummary(
            n_valid=7,
            problems=["cohort.csv line 3, patient P2: unknown label 'necrosis'"],
            labels={"rice": 3, "recurrence": 3, "unlabelled": 1},
            roles={"development": 0, "test": 6, "unlabelled": 1},
            excluded={"P5": "registration_similarity: NCC 0.1"},
        ),
        champion="dose",
        code_version="0.1.0+gabc",
    )


def test_page_is_self_contained_and_complete(tmp_path: Path) -> None:
    content = _content(tmp_path)
    path = write_html_report(content, tmp_path / "out" / "report.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "nothing fetched from the network"
    assert "<script" not in page and "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # ablation, ROC, the overlay
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    for combination in COMBINATIONS:  # the 7-row table beside the study's figures
        assert f"<code>{combination}</code>" in page
    assert "<code>dose</code> (champion)" in page and "0.916" in page and "not run" in page
    for text in (
        "0123456789abcdef",  # experiment version
        "majority voting",
        "T0",  # test predictions
        "U1",  # the champion's prediction of an unlabelled patient
        "rice-net-champion-quick",  # model versions
        "registration_similarity: NCC 0.1",  # exclusions with the reason
        "unknown label &#x27;necrosis&#x27;",  # validation problems, escaped
        "Synthetic cohort",  # the banner
        "generative model",  # docs/synthetic_cohort.md
        "0.1.0+gabc",
    ):
        assert text in page, text


def test_a_real_cohort_has_no_synthetic_sections(tmp_path: Path) -> None:
    page = render_html(_content(tmp_path, cohort="real"))
    assert "Synthetic cohort" not in page and "generative model" not in page


def test_markdown_subset() -> None:
    html = markdown_to_html(
        "# Title\n\nSome `code` and **bold**.\n\n- one\n- two\n  continued\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "```\nx < 1\n```\n"
    )
    assert "<h3>Title</h3>" in html and "<code>code</code>" in html and "<strong>bold</strong>" in html
    assert "<li>two continued</li>" in html and "<td>2</td>" in html and "<pre>x &lt; 1</pre>" in html


def test_same_content_gives_the_same_bytes_unless_a_time_is_given(tmp_path: Path) -> None:
    """The lake's copy (evaluation_tables) must re-run to the same checksum: no wall clock inside."""
    content = _content(tmp_path)
    first = write_html_report(content, tmp_path / "a.html").read_bytes()
    assert write_html_report(content, tmp_path / "b.html").read_bytes() == first
    assert b"Generated" not in first
    stamped = dataclasses.replace(content, generated_at=dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC))
    assert (
        "Generated</td><td>2026-11-30 15:00:00 UTC"
        in write_html_report(stamped, tmp_path / "c.html").read_text()
    )
