import pytest

from data_catalog import Catalog, SplitRecord


def _metric(fold: int | None, value: float, metric: str = "f1_macro") -> dict:
    return {"scope": "cv_val", "combination": "dose", "fold": fold, "metric": metric, "value": value}


def test_replace_rows_is_keyed_and_idempotent(catalog: Catalog) -> None:
    for _ in range(2):
        catalog.replace_rows("metrics", [_metric(0, 0.7), _metric(0, 0.8, "auc")], where={"fold": 0})
        catalog.replace_rows("metrics", [_metric(1, 0.6)], where={"fold": 1})
        catalog.replace_rows("metrics", [_metric(None, 0.65)], where={"scope": "cv_val", "fold": None})
    rows = catalog.query("SELECT fold, metric, value, created FROM metrics ORDER BY fold, metric")
    assert [(r["fold"], r["metric"], r["value"]) for r in rows] == [
        (0, "auc", 0.8), (0, "f1_macro", 0.7), (1, "f1_macro", 0.6), (None, "f1_macro", 0.65)]  # fmt: skip
    assert all(r["created"] is not None for r in rows)

    new = {"scope": "cv_val", "combination": "dose", "metric": "f1_macro", "value": 0.9}
    catalog.replace_rows("metrics", [new], where={"fold": 0})
    assert catalog.query("SELECT metric, value FROM metrics WHERE fold = 0") == [
        {"metric": "f1_macro", "value": 0.9}
    ]


def test_replace_rows_refuses_inconsistent_or_unknown_input(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="does not match"):
        catalog.replace_rows("metrics", [_metric(1, 0.5)], where={"fold": 0})
    with pytest.raises(ValueError, match="no columns"):
        catalog.replace_rows("metrics", [{**_metric(0, 0.5), "colour": "red"}], where={"fold": 0})
    with pytest.raises(ValueError, match="typed Catalog API"):
        catalog.replace_rows("artifacts", [], where={})
    with pytest.raises(ValueError, match="no table"):
        catalog.replace_rows("nothing", [], where={})
    with pytest.raises(ValueError, match="identifier"):
        catalog.replace_rows("metrics; DROP TABLE patients", [], where={})
    assert catalog.query("SELECT * FROM metrics") == []


def test_model_rows_keep_json_metadata(catalog: Catalog) -> None:
    row = {"model_id": "fold_models/dose|0/model", "combination": "dose", "fold": 0, "mlflow_run_id": "r1",
           "model_version": "3", "metadata": {"epochs": 2, "classes": ["rice", "recurrence"]}}  # fmt: skip
    catalog.replace_rows("models", [row], where={"model_id": row["model_id"]})
    catalog.replace_rows("models", [row], where={"model_id": row["model_id"]})
    (stored,) = catalog.query("SELECT model_version, metadata FROM models")
    assert stored == {"model_version": "3", "metadata": {"epochs": 2, "classes": ["rice", "recurrence"]}}


def test_write_table_creates_and_replaces(catalog: Catalog) -> None:
    rows = [
        {"combination": "dose", "f1_val": 0.78, "n": 40, "best": False, "folds": [0.7, 0.8]},
        {"combination": "postop+event+dose", "f1_val": 0.8, "n": 40, "best": True, "folds": [0.8, 0.81]},
    ]
    assert catalog.write_table("ablation", rows) == 2
    assert catalog.query("SELECT * FROM ablation ORDER BY f1_val") == rows
    catalog.write_table("ablation", [{"combination": "dose", "f1_test": 1}])
    assert catalog.query("SELECT * FROM ablation") == [{"combination": "dose", "f1_test": 1}]
    catalog.write_table("ablation", [], types={"combination": "TEXT"})
    assert catalog.query("SELECT * FROM ablation") == []


@pytest.mark.parametrize(
    ("name", "rows", "error", "message"),
    [
        ("patients", [{"a": 1}], ValueError, "typed Catalog API"),
        ("bad name", [{"a": 1}], ValueError, "identifier"),
        ("t", [], ValueError, "no columns"),
        ("t", [{"a": 1}, {"a": "x"}], TypeError, "mixes"),
        ("t", [{"a": object()}], TypeError, "infer"),
    ],
)
def test_write_table_refuses(catalog: Catalog, name: str, rows: list, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        catalog.write_table(name, rows)


def test_splits(catalog: Catalog) -> None:
    records = [SplitRecord("P9", "test", seed=7)]
    for pid, val_fold in (("P1", 0), ("P2", 1), ("P3", 0)):
        records += [SplitRecord(pid, "val" if f == val_fold else "train", f, 7, 2) for f in (0, 1)]
    for _ in range(2):
        catalog.replace_splits(
            records, profile="quick", experiment_version="e1", artifact_id="cv_splits@quick/__all__/splits"
        )
    catalog.replace_splits(records[:1], profile="paper", experiment_version="e2")
    assert catalog.query("SELECT count(*) AS n FROM splits WHERE profile = 'quick'") == [{"n": 7}]
    assert catalog.split_patients("test", profile="paper", experiment_version="e2") == ["P9"]
    assert catalog.split_patients("val", 0, profile="paper") == []
    assert catalog.split_patients("val", 0) == ["P1", "P3"]
    assert catalog.split_patients("train", 0) == ["P2"]
    assert catalog.split_patients("test") == ["P9"]
    with pytest.raises(ValueError, match="fold"):
        SplitRecord("P1", "val")
    with pytest.raises(ValueError, match="fold"):
        SplitRecord("P1", "test", 0)
