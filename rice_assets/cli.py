"""The `rice` command: synthesise a cohort, validate a landing zone, run the pipeline, show or reset the
frozen split, print the report, serve the UI."""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rice_models.channels import COMBINATIONS
from rice_models.landing import LandingError, validate_landing
from rice_models.paths import RicePaths
from rice_models.profiles import PROFILES, get_profile


def _synth(args: argparse.Namespace) -> int:
    from rice_models.progress import Progress
    from rice_models.synth import generate_cohort

    out = Path(args.out).resolve()
    print(f"rice synth: writing {args.patients} synthetic patients (seed {args.seed}) to {out}", flush=True)
    with Progress(args.patients, "synthesising patients") as shown:
        cohort = generate_cohort(
            out, args.patients, args.seed, spacing_mm=args.spacing, on_patient=lambda _: shown.advance()
        )
    print(f"wrote {len(cohort.patients)} synthetic patients to {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    landing = Path(args.landing) if args.landing else RicePaths.from_env().landing
    try:
        report = validate_landing(landing)
    except LandingError as err:
        print(f"landing zone {landing} is unusable:\n{err}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(problem, file=sys.stderr)
    print(f"{len(report.patients)} valid patient(s), {len(report.rejected_ids())} rejected, in {landing}")
    return 0 if report.ok else 1


def _run(args: argparse.Namespace) -> int:
    paths = _prepared_paths(args)
    import dagster as dg

    from rice_assets.runner import BackfillCancelled, DaemonNotRunning, dagster_daemon, run_pipeline

    print(f"rice run: RICE_HOME={paths.home} landing={paths.landing} profile={os.environ['RICE_PROFILE']}")
    start = time.monotonic()
    with dg.DagsterInstance.get() as instance, dagster_daemon(paths, instance):
        try:
            summary = run_pipeline(
                paths, instance, op_config=_training_overrides(args), combinations=args.combinations
            )
        except BackfillCancelled:
            print("cancelled: `rice run` again resumes (current partitions are skipped)", file=sys.stderr)
            return 130
        except DaemonNotRunning as err:
            print(f"rice run: {err}", file=sys.stderr)
            return 1
    skipped = sum(summary.skipped.values())
    print(
        f"\n{len(summary.completed)} run(s) done, {len(summary.failures)} failed, {skipped} partition(s) "
        f"already current, in {time.monotonic() - start:.0f} s; "
        f"backfills: {', '.join(summary.backfills) or 'none'}"
    )
    for label, reason in summary.failures.items():
        print(f"  failed: {label}: {reason}")
    profile = os.environ["RICE_PROFILE"]
    report = paths.lake_dir("evaluation_tables", "__all__", profile) / "report.md"
    if report.is_file():
        print("\n" + report.read_text())
        print(_result_locations(paths, profile))
    print(f"results: lake {paths.lake}, catalog {paths.catalog}, MLflow {paths.mlflow_db}")
    print(f"browse:  rice dev   (Dagster UI on http://127.0.0.1:3000, DAGSTER_HOME={paths.dagster_home})")
    return 0 if summary.ok else 1


def _predict(args: argparse.Namespace) -> int:
    paths = _prepared_paths(args)
    from rice_assets.predict import PredictError, predict_folder

    folder = Path(args.patient_dir)
    if not folder.is_dir():
        print(f"rice predict: {folder} is not a folder", file=sys.stderr)
        return 2
    try:
        prediction, files = predict_folder(
            paths, folder, args.dose_kind, args.n_fractions, args.prescription_gy
        )
    except PredictError as err:
        print(f"rice predict: patient {folder.name}: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {**prediction.as_dict(), "report": str(files["report"]), "overlay": str(files["overlay"])}
            )
        )
        return 0
    p = prediction
    print(f"patient {p.patient_id}: P(RICE) = {p.probability_rice:.4f} -> {p.predicted}")
    print(
        f"model:   {p.model} version {p.model_version} ({p.combination}, experiment {p.experiment_version})"
    )
    print(f"report:  {files['report']}")
    print(f"overlay: {files['overlay']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    paths = RicePaths.from_env()
    profile = get_profile(args.profile).name
    report = paths.lake_dir("evaluation_tables", "__all__", profile) / "report.md"
    if not report.is_file():
        print(
            f"no report at {report}: run `rice run --profile {profile}` "
            "(or materialise evaluation_tables) first",
            file=sys.stderr,
        )
        return 1
    print(report.read_text())
    html = _html_report(paths, profile)
    print(_result_locations(paths, profile))
    if html is not None:
        print(f"HTML report:     {html}  (one self-contained file: open it in any browser)")
    return 0


def _html_report(paths: RicePaths, profile: str) -> Path | None:
    """Print the champion and its predictions and write the complete HTML report (a progress bar on a
    terminal); None, with a note, when the evaluation's tables are missing."""
    from data_catalog import Catalog
    from rice_assets.html_report import REPORT_STEPS, complete_report_path, outcome_lines, write_report
    from rice_models.progress import Progress

    try:
        with Progress(REPORT_STEPS, "writing the HTML report") as shown:
            html, content = write_report(
                paths,
                Catalog(paths.catalog),
                profile,
                complete_report_path(paths, profile),
                step=lambda _: shown.advance(),
            )
    except FileNotFoundError as err:
        print(f"no HTML report: {err}", file=sys.stderr)
        return None
    print(outcome_lines(content))
    return html


def _split(args: argparse.Namespace) -> int:
    """Show each profile's frozen split, or reset one (the only way to redraw its test set)."""
    from data_catalog import Catalog

    paths = RicePaths.from_env()
    catalog = Catalog(paths.catalog)
    if args.reset:
        profile = get_profile(args.profile).name
        when = catalog.reset_splits(profile, reason=args.reason)
        print(
            f"profile {profile}: split reset at {when:%Y-%m-%d %H:%M:%S} UTC (recorded in table "
            "split_resets); the next cv_splits draws the test set and folds afresh, and every fold model "
            "becomes stale"
        )
        return 0
    for profile in [args.profile] if args.profile else sorted(PROFILES):
        memory = catalog.split_memory(profile)
        reset = f", last reset {memory.reset_at:%Y-%m-%d %H:%M:%S} UTC" if memory.reset_at else ""
        origin = {None: "no split yet", True: "test set drawn", False: "test set marked in cohort.csv"}
        print(
            f"{profile}: {len(memory.test)} test patient(s) frozen, {len(memory.development)} development "
            f"patient(s) never to enter the test set ({origin[memory.test_generated]}{reset})"
        )
    return 0


def _result_locations(paths: RicePaths, profile: str) -> str:
    """Where a user finds the report, the plots and the occlusion maps of a profile."""
    tables = paths.lake_dir("evaluation_tables", "__all__", profile)
    maps = paths.lake / "occlusion_maps" / profile
    occlusion = sorted(maps.glob("*/overlay.png"))
    lines = [
        f"report:          {tables / 'report.md'}",
        f"tables:          {tables}/{{ablation,cells,test_predictions}}.csv  (DuckDB: {paths.catalog})",
        f"plots:           {tables}/{{ablation,roc,confusion}}.png",
        f"occlusion maps:  {maps}  ({len(occlusion)} test patient(s))",
    ]
    lines += [f"                 {p.parent}" for p in occlusion]
    return "\n".join(lines)


def _training_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """`--epochs`/`--learning-rate` as run config of `fold_models` (the profile's own otherwise)."""
    config: dict[str, object] = {}
    if args.epochs is not None:
        config["epochs"] = args.epochs
    if args.learning_rate is not None:
        config["learning_rate"] = args.learning_rate
    return {"fold_models": config} if config else {}


def _dev(args: argparse.Namespace) -> int:
    from rice_assets.home import thread_environment

    paths = _prepared_paths(args)
    command = [
        sys.executable,
        "-W",
        "ignore::FutureWarning",  # dagster's notice that `dg dev` supersedes `dagster dev`
        "-m",
        "dagster",
        "dev",
        "-m",
        "rice_assets.definitions",
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(f"DAGSTER_HOME={paths.dagster_home} {' '.join(command)}")
    print(f"Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    return _serve_until_interrupted(command, env={**os.environ, **thread_environment(paths.dagster_home)})


def _serve_until_interrupted(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run a server in the foreground; Ctrl-C (which the server receives too) stops it without a
    traceback: exit status 0 for a stop asked for."""
    server = subprocess.Popen(command, env=env)
    try:
        return server.wait()
    except KeyboardInterrupt:
        print("\nstopping (Ctrl-C) ...", file=sys.stderr, flush=True)
    try:
        server.wait(timeout=30)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        server.kill()
        server.wait()
    print("stopped.", file=sys.stderr)
    return 0


def _prepared_paths(args: argparse.Namespace) -> RicePaths:
    from rice_assets.home import prepare_home

    if getattr(args, "profile", None):
        os.environ["RICE_PROFILE"] = args.profile
    os.environ.setdefault("RICE_PROFILE", "quick")
    paths = RicePaths.from_env()
    prepare_home(paths)
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="write a synthetic cohort (landing-zone layout) built on MNI152")
    synth.add_argument("--out", required=True, help="landing-zone folder to write")
    synth.add_argument("--patients", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--spacing", type=float, default=2.0, help="voxel size of the MRI in mm")
    synth.set_defaults(func=_synth)
    validate = sub.add_parser("validate", help="check cohort.csv and every patient folder; list all problems")
    validate.add_argument("--landing", help="landing zone (default $RICE_LANDING or $RICE_HOME/landing)")
    validate.set_defaults(func=_validate)
    run = sub.add_parser(
        "run", help="submit the pipeline to Dagster as asset backfills and follow them (resumes)"
    )
    run.add_argument("--profile", choices=["quick", "paper"], help="default $RICE_PROFILE or quick")
    run.add_argument("--epochs", type=int, help="override the profile's training epochs")
    run.add_argument("--learning-rate", type=float, help="override the profile's Adam learning rate")
    run.add_argument(
        "--combinations",
        nargs="+",
        choices=COMBINATIONS,
        metavar="COMBINATION",
        help=f"train only these channel combinations (default all seven: {' '.join(COMBINATIONS)})",
    )
    run.set_defaults(func=_run)
    predict = sub.add_parser(
        "predict", help="predict one patient folder with the champion (P(RICE), class, report)"
    )
    predict.add_argument("patient_dir", help="one patient's folder in the landing-zone layout")
    predict.add_argument("--profile", choices=sorted(PROFILES), help="default $RICE_PROFILE or quick")
    predict.add_argument("--dose-kind", choices=["total", "fraction"], default="total")
    predict.add_argument(
        "--n-fractions", type=int, help="fractions of the course (with --dose-kind fraction)"
    )
    predict.add_argument(
        "--prescription-gy", type=float, help="prescribed dose (a RELATIVE RT Dose needs it)"
    )
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.set_defaults(func=_predict)
    report = sub.add_parser("report", help="print the ablation table beside the study's figures")
    report.add_argument("--profile", choices=sorted(PROFILES), help="default $RICE_PROFILE or quick")
    report.set_defaults(func=_report)
    split = sub.add_parser("split", help="show the frozen test set of each profile, or reset one")
    split.add_argument(
        "--profile", choices=sorted(PROFILES), help="default: every profile (--reset: current)"
    )
    split.add_argument(
        "--reset", action="store_true", help="redraw the profile's test set and folds at the next cv_splits"
    )
    split.add_argument("--reason", help="why the split is reset (recorded in the catalog)")
    split.set_defaults(func=_split)
    dev = sub.add_parser(
        "dev", help="serve the Dagster UI and daemon (sensors, schedules, automation) for this RICE_HOME"
    )
    dev.add_argument("--port", type=int, default=3000)
    dev.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the UI binds (default 127.0.0.1: this machine only; to share it, keep this and put "
        "an authenticating reverse proxy in front, README 'Access')",
    )
    dev.set_defaults(func=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
