"""How each stage's cost grows with the number of patients: wall time and peak memory at several cohort
sizes, and the growth exponent per stage (slope of log cost against log patients: 1 = linear).

    .venv/bin/python benchmarks/scaling.py [--patients 20 40 80]
        [--stages landing,catalog,cache,preprocessing] [--large 10000] [--out benchmarks/results/scaling.json]

Stages (each on a fresh temporary RICE_HOME per cohort size):

- `landing`: `validate_landing` of the whole landing zone (what `cohort_manifest` does once a run), and the
  per-patient validation every per-patient asset does (`patient_entry` for each patient, summed);
- `catalog`: upsert the cohort's patients, then record three artifacts with lineage per patient (one
  `record_artifacts` call per patient, as the preprocessing assets do), then read them back;
- `cache`: the training data path's `CacheDataset` of the cohort at the quick shape: resident memory it
  adds (the cache holds every training patient's volumes; 224³ × 3 channels is ~135 MB a patient);
- `preprocessing`: the real `raw_scans`, `dose_maps`, `registered_volumes` of each synthetic patient
  through Dagster (`dagster.materialize`, quick profile), after `cohort_manifest` (~3 s a patient on 2 cores).

With `--large N` (default 10,000) the landing and catalog stages also run at N patients with synthetic
cohort.csv rows and tiny placeholder input files (what validation reads; nothing is decoded), and the
exponent is taken between the largest small size and N.

Wall time of `synth` is not counted. Peak memory is the process's resident peak (`ru_maxrss`) after the
stage, which only grows: the figure for a stage is the growth it caused.
"""

import argparse
import csv
import json
import math
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from data_catalog import ArtifactRecord, Catalog, PatientRecord

STAGES = ("landing", "catalog", "cache", "preprocessing")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(run: Callable[[], object]) -> dict[str, float]:
    before, start = rss_mib(), time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - start, "peak_rss_growth_mib": rss_mib() - before}


def placeholder_landing(landing: Path, n: int) -> list[str]:
    """cohort.csv with n rows and, per patient, three tiny input files (validation reads only headers)."""
    ids = [f"P{i:05d}" for i in range(n)]
    landing.mkdir(parents=True)
    with (landing / "cohort.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "label", "split", "dose_kind", "n_fractions"])
        for i, pid in enumerate(ids):
            writer.writerow([pid, ("rice", "recurrence")[i % 2], "", "total", ""])
    for pid in ids:
        folder = landing / pid
        folder.mkdir()
        for channel in ("mri_postop", "mri_event", "dose"):
            (folder / f"{channel}.nii").write_bytes(b"\0" * 8)
    return ids


def landing_stage(root: Path, n: int) -> dict[str, Any]:
    from rice_models.landing import patient_entry, validate_landing

    ids = placeholder_landing(root / "landing", n)
    whole = measured(lambda: validate_landing(root / "landing"))
    per_patient = measured(lambda: [patient_entry(root / "landing", pid) for pid in ids])
    return {"validate_landing": whole, "patient_entry_all": per_patient}


def catalog_stage(root: Path, n: int) -> dict[str, Any]:
    catalog = Catalog(root / "catalog.duckdb")
    ids = [f"P{i:05d}" for i in range(n)]
    upsert = measured(lambda: catalog.upsert_patients([PatientRecord(pid, label="rice") for pid in ids]))

    def record() -> None:
        for pid in ids:
            records = [
                ArtifactRecord(name=name, path=f"/lake/{pid}/{name}", sha256="0" * 64, profile="quick")
                for name in ("mri_postop", "mri_event", "dose")
            ]
            catalog.record_artifacts("registered_volumes", pid, records, check_parents=False)

    recorded = measured(record)
    read = measured(lambda: (catalog.patients(active_only=True), catalog.artifacts()))
    return {"upsert_patients": upsert, "record_artifacts_all": recorded, "read_back": read}


def catalog_per_call(root: Path, n: int, calls: int = 20) -> dict[str, Any]:
    """At catalog size n: seconds of one patient's `record_artifacts` (the per-patient cost), mean of
    `calls` calls."""
    catalog = Catalog(root / "catalog.duckdb")
    ids = [f"P{i:05d}" for i in range(n)]
    catalog.upsert_patients([PatientRecord(pid, label="rice") for pid in ids])
    rows = [
        {
            "artifact_id": f"registered_volumes@quick/{pid}/{name}",
            "asset": "registered_volumes",
            "partition_key": pid,
        }
        for pid in ids
        for name in ("mri_postop", "mri_event", "dose")
    ]
    _bulk_artifacts(root / "catalog.duckdb", rows)
    start = time.perf_counter()
    for pid in ids[:calls]:
        records = [ArtifactRecord(name="dose", path=f"/lake/{pid}", sha256="1" * 64, profile="quick")]
        catalog.record_artifacts("registered_volumes", pid, records, check_parents=False)
    return {"record_artifacts_one_patient_s": (time.perf_counter() - start) / calls, "catalog_patients": n}


def _bulk_artifacts(path: Path, rows: list[dict[str, str]]) -> None:
    """Fill the artifacts table quickly (one INSERT of all rows) to reach a large catalog."""
    import duckdb
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["name"] = frame["artifact_id"].str.rsplit("/", n=1).str[-1]
    with duckdb.connect(str(path)) as con:
        con.register("frame", frame)
        con.execute(
            "INSERT INTO artifacts (artifact_id, asset, partition_key, name, sha256, profile, created) "
            "SELECT artifact_id, asset, partition_key, name, repeat('0', 64), 'quick', now() FROM frame"
        )


def cache_stage(root: Path, n: int) -> dict[str, Any]:
    import nibabel as nib

    from rice_models.data import cached_dataset, make_item

    shape, affine = (32, 32, 32), np.diag([5.0, 5.0, 5.0, 1.0])
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        folder = root / f"P{i:05d}"
        folder.mkdir(parents=True)
        for channel in ("mri_postop", "mri_event", "dose"):
            path = folder / f"{channel}.nii.gz"
            nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), affine), path)
        items.append(make_item(f"P{i:05d}", folder, "postop+event+dose", i % 2))
    datasets: list[Any] = []
    result = measured(lambda: datasets.append(cached_dataset(items)))
    result["bytes_per_patient_cached"] = 3 * 4 * math.prod(shape)
    return result


def preprocessing_stage(root: Path, n: int) -> dict[str, Any]:
    import dagster as dg

    from rice_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from rice_assets.resources import rice_resources
    from rice_models.paths import RicePaths
    from rice_models.synth import generate_cohort

    paths = RicePaths(home=root / "home", landing=root / "landing")
    cohort = generate_cohort(paths.landing, n_patients=n, seed=0, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    resources = rice_resources(paths)
    defs = [*ALL_ASSETS, *ALL_CHECKS]
    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize(defs, selection=["cohort_manifest"], resources=resources, instance=instance)

        def run() -> None:
            for patient in cohort.patients:
                dg.materialize(
                    defs,
                    selection=["raw_scans", "dose_maps", "registered_volumes"],
                    partition_key=patient.patient_id,
                    resources=resources,
                    instance=instance,
                )

        return measured(run)


RUNNERS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "landing": landing_stage,
    "catalog": catalog_stage,
    "cache": cache_stage,
    "preprocessing": preprocessing_stage,
}


def flatten(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """`{"a": {"seconds": s}}` -> `{"a": s}`: the wall time of each measured part."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, dict) and "seconds" in value:
            out[prefix + key] = value["seconds"]
        elif isinstance(value, dict):
            out.update(flatten(value, prefix + key + "."))
    if "seconds" in result:
        out[prefix.rstrip(".") or "total"] = result["seconds"]
    return out


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(patients)."""
    x, y = np.log(sizes), np.log(np.maximum(seconds, 1e-9))
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", nargs="+", type=int, default=[20, 40, 80])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {STAGES}")
    parser.add_argument("--large", type=int, default=10_000, help="landing + catalog at this size (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scaling.json"))
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {STAGES}")
    report: dict[str, Any] = {"patients": args.patients, "stages": {}}
    for stage in stages:
        runs = {}
        for n in args.patients:
            with tempfile.TemporaryDirectory(prefix=f"rice-scaling-{stage}-") as tmp:
                runs[n] = RUNNERS[stage](Path(tmp), n)
            print(f"{stage:14s} {n:6d} patients  {json.dumps(runs[n])}", flush=True)
        parts = {n: flatten(r) for n, r in runs.items()}
        exponents = {
            part: exponent(args.patients, [parts[n][part] for n in args.patients])
            for part in parts[args.patients[0]]
        }
        report["stages"][stage] = {"runs": runs, "exponents": exponents}
        for part, value in exponents.items():
            print(f"  growth exponent {stage}.{part}: {value:.2f}", flush=True)
    if args.large:
        report["large"] = large(args.large, max(args.patients), stages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


def large(n: int, small: int, stages: list[str]) -> dict[str, Any]:
    """Landing validation and the catalog's per-patient cost at `n` patients against `small`."""
    out: dict[str, Any] = {"patients": n, "compared_with": small}
    if "landing" in stages:
        with tempfile.TemporaryDirectory(prefix="rice-scaling-large-") as tmp:
            big = landing_stage(Path(tmp), n)
        with tempfile.TemporaryDirectory(prefix="rice-scaling-small-") as tmp:
            little = landing_stage(Path(tmp), small)
        for part in ("validate_landing", "patient_entry_all"):
            growth = exponent([small, n], [little[part]["seconds"], big[part]["seconds"]])
            out[f"landing.{part}"] = {"seconds": big[part]["seconds"], "exponent": growth}
            print(f"landing.{part} at {n}: {big[part]['seconds']:.2f} s, exponent {growth:.2f}", flush=True)
    if "catalog" in stages:
        per_call = {}
        for size in (small, n):
            with tempfile.TemporaryDirectory(prefix="rice-scaling-catalog-") as tmp:
                per_call[size] = catalog_per_call(Path(tmp), size)
        ratio = (
            per_call[n]["record_artifacts_one_patient_s"] / per_call[small]["record_artifacts_one_patient_s"]
        )
        growth = 1 + math.log(ratio) / math.log(n / small)  # total = patients x per-patient cost
        out["catalog.record_artifacts"] = {"per_call": per_call, "exponent_of_total": growth}
        print(
            f"catalog.record_artifacts per patient {per_call}, exponent of the total {growth:.2f}", flush=True
        )
    return out


if __name__ == "__main__":
    main()
