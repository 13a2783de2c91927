"""Ablation sweep: how well each training setting recovers the synthetic cohort's planted signal.

    .venv/bin/python benchmarks/quick_ablation.py --home RICE_HOME [--patients 40] \
        [--setting base:] [--setting slow:learning_rate=1e-4,epochs=40] [--combinations dose postop] \
        [--split-seed 2026] [--workers 2] [--device cpu] [--deadline-s 0] [--out results.jsonl]
    .venv/bin/python benchmarks/quick_ablation.py --home RICE_HOME --summarise results.jsonl ... \
        [--every 5] [--epochs 20]

Reads a RICE_HOME whose cohort has been preprocessed (`registered_volumes` in the lake; e.g. after
`rice run`, or the cohort and preprocessing stages alone) and trains, for every setting, the
combination x fold cells of the ablation with `rice_models.training.train_fold`, the same function
`fold_models` runs. No Dagster, MLflow or catalog: this is a script that prints figures.

Patients: the first `--patients` labelled patients of `landing/cohort.csv` (sorted ids; synthetic
patients are the same whatever the cohort's size), with the test marks of cohort.csv, split by
`rice_models.splits.make_splits` with the profile's seed, as `cv_splits` does.

Per setting and combination it prints: validation macro F1 per fold (mean and sd: what
`evaluation_tables` reports), the out-of-fold ROC AUC over all development patients (every patient
scored by the fold model that did not train on it: a steadier figure than 5 folds of 7 patients),
and the test set's soft-vote ROC AUC and majority-vote macro F1. Each cell's result is appended to
`--out` as a JSON line as soon as it is known, so an interrupted sweep keeps what it did.

`--summarise` with `--every K` / `--epochs E` reads each cell's best epoch again from its recorded
history as a cell that validated every K epochs (and after its last) and trained E epochs would have
reported it: validating does not change the training (`tests/rice_models/test_training.py`), and a cell
trained longer has the shorter cell's epochs as its first ones. Histories need every epoch validated
(`validation_interval=1` in the setting); the out-of-fold and test columns stay those of the recorded
cells. The summary ends with issue 9's item 3 per setting: the mean
over the dose combinations minus the mean over the MRI-only ones, and whether `dose` alone is at least
every MRI-only combination.

Settings: `name:key=value,...` with keys of `rice_models.profiles.Profile` (values parsed as JSON,
else kept as strings); an empty list keeps the profile's own settings.
"""

import argparse
import json
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

Setting = tuple[str, dict[str, Any]]


def parse_setting(text: str) -> Setting:
    """`name:key=value,key=value` -> (name, overrides)."""
    name, _, rest = text.partition(":")
    overrides: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, _, value = pair.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return name, overrides


def cohort_rows(home: Path, n_patients: int) -> list[tuple[str, str | None, str | None]]:
    """(patient_id, label, split) of the first `n_patients` labelled patients, by id."""
    from rice_models.landing import read_cohort_rows

    rows, _ = read_cohort_rows(home / "landing" / "cohort.csv")
    labelled = sorted((r for r in rows if r["label"]), key=lambda r: r["patient_id"])[:n_patients]
    return [(r["patient_id"], r["label"], r.get("split") or None) for r in labelled]


def _cell(task: dict[str, Any]) -> dict[str, Any]:
    """Train one cell; its validation and test probabilities (runs in a worker process)."""
    import torch

    torch.set_num_threads(task["threads"])
    from rice_models.data import make_item
    from rice_models.experiment import fold_seed
    from rice_models.profiles import get_profile
    from rice_models.training import predict_proba, train_fold

    volumes = Path(task["home"]) / "lake" / "registered_volumes" / "quick"  # per profile

    def items(ids: Sequence[str], labelled: bool = True) -> list[dict[str, Any]]:
        return [
            make_item(p, volumes / p, task["combination"], task["labels"][p] if labelled else None)
            for p in ids
        ]

    profile = get_profile("quick", **task["overrides"])
    seed = fold_seed(profile.train_seed, task["combination"], task["fold"])  # as `fold_models` seeds the cell
    result = train_fold(items(task["train"]), items(task["val"]), profile, device=task["device"], seed=seed)
    test = predict_proba(result.build_model(), items(task["test"], False), task["device"]).tolist()
    return {
        "setting": task["setting"],
        "combination": task["combination"],
        "fold": task["fold"],
        "val_ids": list(result.val_patient_ids),
        "val_probs": list(result.val_probabilities),
        "val_f1": result.best.val_macro_f1,
        "best_epoch": result.best_epoch,
        "history": [[r.epoch, r.val_macro_f1, r.val_loss] for r in result.history],
        "test_ids": list(task["test"]),
        "test_probs": test,
        "seconds": result.seconds,
        "device": result.device,
    }


def tasks(
    home: Path, rows: list[tuple[str, str | None, str | None]], settings: Sequence[Setting], args: Any
) -> list[dict[str, Any]]:
    """One task per setting x combination x fold, settings first (a deadline cuts the last ones)."""
    from rice_models.profiles import get_profile
    from rice_models.splits import make_splits

    base = get_profile("quick")
    seed = base.split_seed if args.split_seed is None else args.split_seed
    splits = make_splits(rows, base.n_folds, base.test_fraction, seed)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    return [
        {
            "home": str(home),
            "setting": name,
            "overrides": overrides,
            "combination": combination,
            "fold": fold.index,
            "train": list(fold.train),
            "val": list(fold.val),
            "test": list(splits.test),
            "labels": dict(splits.labels),
            "device": args.device,
            "threads": threads,
        }
        for name, overrides in settings
        for combination in args.combinations
        for fold in splits.folds
    ]


def reselect(result: Mapping[str, Any], every: int, epochs: int | None) -> dict[str, Any]:
    """The cell as if it had trained `epochs` epochs and validated every `every` (module docstring).

    Raises:
        ValueError: the recorded history lacks a validation that such a cell would have made.
    """
    from rice_models.training import EpochRecord, is_better, is_validation_epoch

    history = [h for h in result["history"] if epochs is None or h[0] <= epochs]
    last = history[-1][0]
    best = None
    for epoch, f1, loss in history:
        if not is_validation_epoch(epoch, last, every):
            continue
        if f1 is None:
            cell = f"{result['setting']} {result['combination']}|{result['fold']}"
            raise ValueError(
                f"{cell}: epoch {epoch} was not validated; record histories with validation_interval=1"
            )
        record = EpochRecord(epoch, 0.0, f1, loss, 0.0)
        if is_better(record, best):  # the rule `train_fold` selects by
            best = record
    assert best is not None  # the last epoch always validates
    return {**result, "val_f1": best.val_macro_f1, "best_epoch": best.epoch}


def item3(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per setting: dose combinations minus MRI-only (mean validation F1), and dose alone against them."""
    from demo import dose_vs_mri  # benchmarks/demo.py: the comparison its summary prints

    from rice_models.channels import COMBINATIONS

    lines = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        f1 = {r["combination"]: r["val_f1"] for r in rows if r["setting"] == setting}
        if set(f1) == set(COMBINATIONS):
            d = dose_vs_mri(f1)
            met = d["dose_alone"] >= d["best_mri_only"]
            lines.append(
                f"{setting}: dose combinations - MRI-only {d['gap']:+.3f}; dose alone {d['dose_alone']:.3f} "
                f"{'>=' if met else '<'} best MRI-only {d['best_mri_only']:.3f}"
            )
    return lines


def summarise(results: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per setting x combination (module docstring)."""
    from rice_models.data import label_index
    from rice_models.ensemble import ensemble_probability
    from rice_models.metrics import classification_metrics, mean_sd

    def truth(ids: Sequence[str]) -> list[int]:
        return [label_index(labels[p]) for p in ids]

    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["setting"], r["combination"])].append(r)
    rows = []
    for (setting, combination), cells in groups.items():
        cells = sorted(cells, key=lambda c: c["fold"])
        oof_ids = [p for c in cells for p in c["val_ids"]]
        oof = classification_metrics(truth(oof_ids), [q for c in cells for q in c["val_probs"]])
        f1_mean, f1_sd = mean_sd([c["val_f1"] for c in cells])
        row = {
            "setting": setting,
            "combination": combination,
            "folds": len(cells),
            "val_f1": f1_mean,
            "val_f1_sd": f1_sd,
            "oof_auc": oof["roc_auc"],
            "oof_f1": oof["macro_f1"],
            "epoch": float(np.mean([c["best_epoch"] for c in cells])),
            "s_per_cell": float(np.mean([c["seconds"] for c in cells])),
        }
        if len(cells) > 1 and cells[0]["test_ids"]:
            probs = np.array([c["test_probs"] for c in cells])
            y = truth(cells[0]["test_ids"])
            soft, _ = ensemble_probability(probs, "soft")
            votes, pred = ensemble_probability(probs, "majority")
            row |= {
                "test_auc": classification_metrics(y, soft)["roc_auc"],
                "test_f1": classification_metrics(y, votes, y_pred=pred)["macro_f1"],
            }
        rows.append(row)
    return rows


COLUMNS = ("setting", "combination", "folds", "val_f1", "val_f1_sd", "oof_auc", "oof_f1", "test_auc")
COLUMNS += ("test_f1", "epoch", "s_per_cell")


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    print(" | ".join(COLUMNS))
    for row in rows:
        cells = [row.get(c) for c in COLUMNS]
        print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a RICE_HOME with registered_volumes")
    parser.add_argument("--patients", type=int, default=40, help="first N labelled patients")
    parser.add_argument("--setting", action="append", type=parse_setting, help="name:key=value,...")
    parser.add_argument("--split-seed", type=int, default=None, help="fold seed (default: the profile's)")
    parser.add_argument("--combinations", nargs="+", default=None)
    parser.add_argument("--workers", type=int, default=1, help="cells trained at once (processes)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    parser.add_argument("--deadline-s", type=float, default=0.0, help="stop starting cells after (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="append each cell's result (JSON lines)")
    parser.add_argument(
        "--summarise", type=Path, nargs="+", help="print the table of earlier --out files instead of training"
    )
    parser.add_argument("--every", type=int, default=None, help="--summarise: as if validated every K epochs")
    parser.add_argument("--epochs", type=int, default=None, help="--summarise: as if trained E epochs")
    args = parser.parse_args()
    if args.summarise:
        labels = {pid: str(label) for pid, label, _ in cohort_rows(args.home, 10**9)}
        lines = [line for path in args.summarise for line in path.read_text().splitlines() if line]
        results = [json.loads(line) for line in lines]
        if args.every or args.epochs:
            results = [reselect(r, args.every or 1, args.epochs) for r in results]
        rows = summarise(results, labels)
        print_table(rows)
        print("\n".join(item3(rows)))
        return
    from rice_models.channels import COMBINATIONS

    args.combinations = args.combinations or list(COMBINATIONS)
    settings = args.setting or [("quick", {})]
    rows = cohort_rows(args.home, args.patients)
    todo = tasks(args.home, rows, settings, args)
    labels = todo[0]["labels"]
    device = args.device or "auto"
    print(f"{len(rows)} patients, {len(todo)} cells, {args.workers} worker(s), device {device}")
    start, results = time.monotonic(), []
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        pending = {}
        queue = list(todo)
        while queue or pending:
            late = args.deadline_s and time.monotonic() - start > args.deadline_s
            while queue and len(pending) < args.workers and not late:
                task = queue.pop(0)
                pending[pool.submit(_cell, task)] = task
            if not pending:
                break
            future = next(as_completed(pending))
            pending.pop(future)
            result = future.result()
            results.append(result)
            if args.out:
                with args.out.open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
            print(
                f"  {time.monotonic() - start:6.0f} s  {result['setting']} {result['combination']}|"
                f"{result['fold']}  val F1 {result['val_f1']:.2f} (epoch {result['best_epoch']}, "
                f"{result['seconds']:.1f} s, {result['device']})",
                flush=True,
            )
    rows = summarise(results, labels)
    print_table(rows)
    print("\n".join(item3(rows)))


if __name__ == "__main__":
    main()
