"""Benchmark: per-patient preprocessing wall time versus the bare ANTs registration calls it makes.

For each profile, one synthetic patient (MNI152 anatomy, stored at `--source-spacing` mm) is run
through what the `registered_volumes` asset does (load NIfTI inputs, `preprocess_patient`, save the
four outputs). Every `ants.registration` call the pipeline makes (event -> post-op, each stage of
the chain, and the template registration of the brain-mask fallback) is timed on its own. The ratio
pipeline / registration time shows what the pipeline adds beyond the antspyx calls (target <= 1.3).

    python benchmarks/preprocess.py                      # quick and paper profiles, 1 mm inputs
    python benchmarks/preprocess.py --profiles quick --source-spacing 2
"""

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "2")

import ants  # noqa: E402

from rice_models.imaging.dose import total_dose_gy  # noqa: E402
from rice_models.imaging.pipeline import preprocess_patient  # noqa: E402
from rice_models.imaging.volume import load_nifti  # noqa: E402
from rice_models.profiles import get_profile  # noqa: E402
from rice_models.synth import generate_cohort  # noqa: E402

TARGET_RATIO = 1.3


class TimedRegistration:
    """Wraps `ants.registration` and adds up the seconds spent inside it."""

    def __init__(self) -> None:
        self.original = ants.registration
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        start = time.perf_counter()
        try:
            return self.original(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run_patient(folder: Path, out: Path, profile_name: str) -> dict[str, float]:
    profile = get_profile(profile_name)
    recorder = TimedRegistration()
    ants.registration = recorder
    try:
        start = time.perf_counter()
        postop = load_nifti(folder / "mri_postop.nii.gz")
        event = load_nifti(folder / "mri_event.nii.gz")
        dose = total_dose_gy(load_nifti(folder / "dose.nii.gz"), "total")
        result = preprocess_patient(postop, event, dose, profile)
        result.save(out)
        pipeline = time.perf_counter() - start
    finally:
        ants.registration = recorder.original
    return {
        "pipeline_s": pipeline,
        "registration_s": recorder.seconds,
        "calls": recorder.calls,
        "ratio": pipeline / recorder.seconds,
        **{f"step_{k}": v for k, v in result.timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profiles", nargs="+", default=["quick", "paper"])
    parser.add_argument(
        "--source-spacing", type=float, default=1.0, help="voxel size of the synthetic inputs"
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--warm",
        action="store_true",
        help="run each profile once before timing (as in `rice run`, where the template is loaded once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        generate_cohort(landing, 1, args.seed, spacing_mm=args.source_spacing, n_test=0, n_unlabelled=0)
        patient = landing / "SYN-0001"
        state = "warm (second patient of the process)" if args.warm else "cold (first patient of the process)"
        print(f"inputs: synthetic patient at {args.source_spacing} mm, 2 ITK threads, {state}")
        print(f"{'profile':8} {'pipeline s':>11} {'ANTs calls s':>13} {'calls':>6} {'ratio':>6}")
        for name in args.profiles:
            run_patient(patient, Path(tmp) / name, name) if args.warm else None
            r = run_patient(patient, Path(tmp) / name, name)
            verdict = "ok" if r["ratio"] <= TARGET_RATIO else f"above target {TARGET_RATIO}"
            print(
                f"{name:8} {r['pipeline_s']:11.2f} {r['registration_s']:13.2f} {r['calls']:6d} "
                f"{r['ratio']:6.2f}  {verdict}"
            )
            steps = {k[5:]: round(v, 2) for k, v in r.items() if k.startswith("step_")}
            print(f"         steps (s): {steps}")


if __name__ == "__main__":
    main()
