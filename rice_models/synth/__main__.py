"""Command line: `python -m rice_models.synth OUT [--patients N] [--seed S] [--spacing MM] [--test N]`."""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from rice_models.synth.cohort import generate_cohort


def main(argv: list[str] | None = None) -> None:
    """Generate a synthetic cohort and print a JSON summary.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(prog="python -m rice_models.synth", description=__doc__)
    parser.add_argument("out", type=Path, help="landing folder to write")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=2.0, help="MRI voxel size in mm")
    parser.add_argument("--test", type=int, default=None, help="test-set size (default 13 %%)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cohort = generate_cohort(args.out, args.patients, args.seed, spacing_mm=args.spacing, n_test=args.test)
    summary = {
        "out": str(cohort.root),
        "patients": len(cohort.patients),
        "labels": Counter(p.csv_label or "unlabelled" for p in cohort.patients),
        "test": sum(p.split == "test" for p in cohort.patients),
        "dose_kinds": Counter(p.dose_kind for p in cohort.patients),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
