"""One label vocabulary, in one order, imported everywhere a label or class index appears."""

import re
from pathlib import Path

import pytest

import data_catalog.records
import rice_models.data
import rice_models.landing
import rice_models.metrics
import rice_models.plots
import rice_models.splits
from rice_models.labels import CLASS_INDICES, LABELS, RICE_INDEX, label_index, label_name

ROOT = Path(__file__).resolve().parents[2]
PAIR = re.compile(r"""\(\s*["'](rice|recurrence)["']\s*,\s*["'](rice|recurrence)["']\s*\)""")


def test_class_index_order() -> None:
    assert LABELS == ("recurrence", "rice") and RICE_INDEX == 1 and CLASS_INDICES == (0, 1)
    assert [label_index(name) for name in LABELS] == [0, 1] and label_index(1) == 1
    assert [label_name(i) for i in CLASS_INDICES] == list(LABELS)
    for bad in ("necrosis", 2, -1):
        with pytest.raises(ValueError):
            label_index(bad)
    with pytest.raises(ValueError):
        label_name(2)


def test_every_module_uses_the_one_definition() -> None:
    assert data_catalog.records.LABELS is LABELS
    assert rice_models.splits.LABELS is LABELS
    assert rice_models.landing.LABELS is LABELS
    assert rice_models.data.label_index is label_index
    assert rice_models.metrics.CLASS_INDICES is CLASS_INDICES
    assert rice_models.plots.CLASS_LABELS == ("recurrence", "RICE")


def test_no_package_spells_the_vocabulary_again() -> None:
    sources = [
        p for pkg in ("rice_models", "data_catalog", "rice_assets") for p in (ROOT / pkg).rglob("*.py")
    ]
    repeated = [
        str(p.relative_to(ROOT)) for p in sources if p.name != "labels.py" and PAIR.search(p.read_text())
    ]
    assert repeated == []
    schema = (ROOT / "data_catalog" / "schema.sql").read_text()
    assert "label IN ('rice', 'recurrence')" in schema, "the SQL constraint names the same two labels"
