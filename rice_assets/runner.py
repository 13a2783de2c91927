"""`rice run`: submit the pipeline to the Dagster instance as asset backfills and follow them.

Nothing is executed here. Each group of stages is one asset backfill on the instance in
`$RICE_HOME/dagster`: the backfill daemon turns it into runs, the instance's run coordinator queues them
(at most `concurrency.runs.max_concurrent_runs` at a time, `fold_models` cells one per slot of pool
`gpu`) and its run launcher starts them, all as the user's `dagster.yaml` configures. The backfills and
runs are on the UI's Backfills and Runs pages. When no daemon is running (no `rice dev`), `rice run`
starts `dagster-daemon` for its own duration.

Resuming: a partition whose materialisation is current in Dagster's own terms (stale status FRESH: same
code version, same input data versions, e.g. the same landing-zone checksums) is not submitted again.
Ctrl-C cancels the backfill (the daemon cancels its runs); `rice run` again resumes.
"""

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._core.execution.backfill import (
    BULK_ACTION_TERMINAL_STATUSES,
    BulkActionStatus,
    PartitionBackfill,
)
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.dagster_run import DagsterRunStatus, RunRecord
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG
from dagster._core.utils import make_new_backfill_id
from dagster._daemon.controller import get_daemon_statuses
from dagster._time import get_current_timestamp

from rice_assets.assets.landing import observe_landing
from rice_assets.home import thread_environment
from rice_assets.stages import STAGES, Stage
from rice_models.paths import RicePaths

BACKFILL_GROUPS: tuple[tuple[str, ...], ...] = (
    ("cohort",),
    ("preprocessing",),
    ("cv_splits",),
    ("training", "evaluation", "champion", "occlusion", "prediction"),
)
"""Stages submitted together as one backfill (Dagster orders them); a group's partitions are known only
once the group before it finished (cohort_manifest opens patients, cv_splits draws the test set)."""

FINISHED = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
TAG = "rice/run"
"""Tag on every backfill `rice run` submits (its value: the stage group)."""


@dataclasses.dataclass(frozen=True)
class StepRun:
    """One run a backfill of `rice run` made: its stage, label, Dagster run id, wall seconds, outcome."""

    stage: str
    label: str
    run_id: str
    seconds: float
    success: bool


@dataclasses.dataclass
class RunSummary:
    """What `rice run` did: backfills submitted, runs made, partitions skipped as current, failures."""

    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    runs: list[StepRun] = dataclasses.field(default_factory=list)
    backfills: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    """stage -> partitions left out because they are current."""

    @property
    def completed(self) -> list[str]:
        """Labels of the runs that succeeded, in order."""
        return [run.label for run in self.runs if run.success]

    @property
    def ok(self) -> bool:
        return not self.failures


class BackfillCancelled(KeyboardInterrupt):
    """Ctrl-C: the backfill was cancelled (its runs too); `rice run` again resumes."""


class DaemonNotRunning(RuntimeError):
    """No `dagster-daemon` heartbeat for the instance while a backfill waits for one."""


HEARTBEAT_TOLERANCE_SECONDS = 60.0
"""A daemon counts as running when each of its parts sent a heartbeat within 30 s (its interval) + this."""
DAEMON_GRACE_SECONDS = 150.0
"""How long a backfill waits without a daemon heartbeat before `rice run` gives up (start-up included)."""


def run_pipeline(
    paths: RicePaths,
    instance: dg.DagsterInstance,
    stages: Sequence[Stage] = STAGES,
    echo: Callable[[str], None] = print,
    op_config: Mapping[str, Mapping[str, Any]] | None = None,
    combinations: Sequence[str] | None = None,
    poll_seconds: float = 1.0,
) -> RunSummary:
    """Submit every stage group as an asset backfill, in order, and follow it to its end.

    The daemon (`dagster-daemon`, e.g. from `rice dev`) must be running: see `daemon_running`. A failed
    partition is reported with its reason and the others go on (Dagster does not run what depends on it);
    a failed unpartitioned stage stops the groups after it.

    Args:
        paths: the RICE_HOME to run on.
        instance: its persistent Dagster instance (not an ephemeral one: the daemon must see it).
        stages: the stages to run, in order.
        echo: where progress lines go.
        op_config: run config per asset, e.g. `{"fold_models": {"epochs": 5}}`.
        combinations: train only these channel combinations (default: all seven).
        poll_seconds: how often the instance is asked for progress.

    Raises:
        BackfillCancelled: Ctrl-C; the current backfill was cancelled.
    """
    # MLflow's warning that fold models are pickled would repeat once per cell in the daemon's log.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    from rice_assets.definitions import defs  # the code location the daemon loads

    graph = defs.resolve_asset_graph()
    summary = RunSummary()
    by_name = {s.name: s for s in stages}
    for group in BACKFILL_GROUPS:
        chosen = [by_name[name] for name in group if name in by_name]
        if not chosen:
            continue
        if "preprocessing" in group:
            observe_landing(instance, paths, instance.get_dynamic_partitions("patients"))
        targets = _targets(instance, paths, graph, chosen, combinations, summary, echo)
        if not targets:
            continue
        title = "rice run: " + ", ".join(s.name for s in chosen)
        backfill_id = submit_backfill(instance, graph, targets, title, _run_config(chosen, op_config or {}))
        summary.backfills.append(backfill_id)
        n_parts = sum(len(keys) for keys in targets.values())
        echo(f"{title}: backfill {backfill_id} ({n_parts} asset partition(s); Backfills page of the UI)")
        outcome = follow_backfill(instance, backfill_id, chosen, targets, echo, poll_seconds)
        summary.runs += outcome.runs
        summary.failures.update(outcome.failures)
        blocked = [s.name for s in chosen if s.partitions is None and outcome.failed_stage(s.name)]
        if blocked:
            echo(f"  stopping: the stages after {blocked[0]} need it")
            return summary
    return summary


Targets = dict[dg.AssetKey, list[str | None]]


def _targets(
    instance: dg.DagsterInstance,
    paths: RicePaths,
    graph: Any,
    stages: Sequence[Stage],
    combinations: Sequence[str] | None,
    summary: RunSummary,
    echo: Callable[[str], None],
) -> Targets:
    """The asset partitions of these stages that are missing or stale (all of them for `always` stages;
    an unpartitioned stage also when a stage before it in the group is submitted)."""
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    targets: Targets = {}
    for stage in stages:
        keys = _stage_keys(instance, paths, stage, combinations)
        keys_of = {asset.key: keys for asset in stage.assets}
        wanted: set[str | None] = set()
        for key in keys:
            if stage.always or (stage.partitions is None and targets):
                wanted.add(key)
            elif any(resolver.get_status(asset_key, key) != StaleStatus.FRESH for asset_key in keys_of):
                wanted.add(key)
            elif stage.partitions is not None and _upstream_submitted(graph, keys_of, targets):
                wanted.add(key)
        chosen = [k for k in keys if k in wanted]
        if len(chosen) < len(keys):
            summary.skipped[stage.name] = len(keys) - len(chosen)
            echo(f"  {stage.name}: {len(keys) - len(chosen)} of {len(keys)} partition(s) current, skipped")
        for asset_key in keys_of:
            if chosen:
                targets[asset_key] = chosen
    return targets


def _upstream_submitted(graph: Any, keys_of: Mapping[dg.AssetKey, Any], targets: Targets) -> bool:
    """An unpartitioned parent (e.g. champion_model) of these assets is in the backfill already."""
    return any(
        parent in targets and targets[parent] == [None]
        for key in keys_of
        for parent in graph.get(key).parent_keys
    )


def _stage_keys(
    instance: dg.DagsterInstance, paths: RicePaths, stage: Stage, combinations: Sequence[str] | None
) -> list[str | None]:
    if stage.partitions is None:
        return [None]
    keys = list(stage.partitions(instance, paths))
    if stage.per_cell and combinations is not None:
        keys = [k for k in keys if k.split("|")[0] in combinations]
    return list(keys)


def submit_backfill(
    instance: dg.DagsterInstance,
    graph: Any,
    targets: Mapping[dg.AssetKey, Sequence[str | None]],
    title: str,
    run_config: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Add an asset backfill of these asset partitions to the instance (the daemon runs it); its id."""
    subset = AssetGraphSubset.from_asset_partition_set(
        {AssetKeyPartitionKey(key, p) for key, keys in targets.items() for p in keys}, graph
    )
    backfill = PartitionBackfill.from_asset_graph_subset(
        backfill_id=make_new_backfill_id(),
        backfill_timestamp=get_current_timestamp(),
        tags={TAG: title, **(tags or {})},
        dynamic_partitions_store=instance,
        asset_graph_subset=subset,
        title=title,
        description=None,
        run_config=run_config,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


@dataclasses.dataclass
class BackfillOutcome:
    runs: list[StepRun] = dataclasses.field(default_factory=list)
    failures: dict[str, str] = dataclasses.field(default_factory=dict)

    def failed_stage(self, stage: str) -> bool:
        return any(run.stage == stage and not run.success for run in self.runs)


def follow_backfill(
    instance: dg.DagsterInstance,
    backfill_id: str,
    stages: Sequence[Stage],
    targets: Mapping[dg.AssetKey, Sequence[str | None]],
    echo: Callable[[str], None],
    poll_seconds: float = 1.0,
) -> BackfillOutcome:
    """Print one line per finished run (with the failure reason) until the backfill is done.

    Raises:
        BackfillCancelled: Ctrl-C; the backfill was marked for cancelling and its runs stopped.
    """
    stage_of = {asset.key: s.name for s in stages for asset in s.assets}
    total = sum(len(keys) for keys in targets.values())
    outcome = BackfillOutcome()
    started = last_alive = time.monotonic()
    seen: set[str] = set()
    done: set[tuple[dg.AssetKey, str | None]] = set()
    bar = _progress_bar(total)
    try:
        while True:
            backfill = instance.get_backfill(backfill_id)
            assert backfill is not None
            records = instance.get_run_records(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
            for record in sorted(records, key=lambda r: r.create_timestamp):
                if record.dagster_run.status not in FINISHED or record.dagster_run.run_id in seen:
                    continue
                seen.add(record.dagster_run.run_id)
                step = _report(instance, record, stage_of, echo if bar is None else bar.write)
                outcome.runs.append(step)
                if not step.success:
                    outcome.failures[step.label] = _failure_reason(instance, record.dagster_run.run_id)
                keys = record.dagster_run.asset_selection or set()
                partition = record.dagster_run.tags.get(PARTITION_NAME_TAG)
                new = {(k, partition) for k in keys} - done
                done |= new
                if bar is not None:
                    bar.update(len(new))
            unfinished = [r for r in records if r.dagster_run.status not in FINISHED]
            finished = backfill.status in BULK_ACTION_TERMINAL_STATUSES or len(done) >= total
            if finished and not unfinished:
                return outcome
            if daemon_running(instance):
                last_alive = time.monotonic()
            elif time.monotonic() - max(started, last_alive) > DAEMON_GRACE_SECONDS:
                raise DaemonNotRunning(
                    f"backfill {backfill_id} waits for a dagster-daemon, and none has sent a heartbeat for "
                    f"{DAEMON_GRACE_SECONDS:.0f} s: see $DAGSTER_HOME/daemon.log, or run `rice dev`"
                )
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        echo(f"\ncancelling backfill {backfill_id} (Ctrl-C again to stop waiting)...")
        cancel_backfill(instance, backfill_id, echo)
        raise BackfillCancelled(backfill_id) from None
    finally:
        if bar is not None:
            bar.close()


def cancel_backfill(
    instance: dg.DagsterInstance, backfill_id: str, echo: Callable[[str], None], timeout: float = 120
) -> None:
    """Mark the backfill CANCELING and wait until the daemon cancelled its runs (or `timeout`)."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None or backfill.status in BULK_ACTION_TERMINAL_STATUSES:
        return
    instance.update_backfill(backfill.with_status(BulkActionStatus.CANCELING))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = instance.get_backfill(backfill_id)
        active = instance.get_runs(
            dg.RunsFilter(
                tags={BACKFILL_ID_TAG: backfill_id},
                statuses=[
                    DagsterRunStatus.QUEUED,
                    DagsterRunStatus.NOT_STARTED,
                    DagsterRunStatus.STARTING,
                    DagsterRunStatus.STARTED,
                    DagsterRunStatus.CANCELING,
                ],
            )
        )
        if current is not None and current.status == BulkActionStatus.CANCELED and not active:
            echo(f"backfill {backfill_id} cancelled; `rice run` again resumes where it stopped")
            return
        time.sleep(1)
    echo(f"backfill {backfill_id} still cancelling after {timeout:.0f} s: see the Backfills page")


def _report(
    instance: dg.DagsterInstance,
    record: RunRecord,
    stage_of: Mapping[dg.AssetKey, str],
    echo: Callable[[str], None],
) -> StepRun:
    run = record.dagster_run
    keys = sorted(run.asset_selection or set(), key=lambda k: k.to_user_string())
    stages = sorted({stage_of.get(k, k.to_user_string()) for k in keys})
    partition = run.tags.get(PARTITION_NAME_TAG)
    label = "+".join(stages) + (f" {partition}" if partition else "")
    seconds = (record.end_time or time.time()) - (record.start_time or record.create_timestamp.timestamp())
    success = run.status == DagsterRunStatus.SUCCESS
    if success:
        echo(f"  ok    {label} ({seconds:.1f} s)")
    else:
        reason = _failure_reason(instance, run.run_id)
        echo(f"  FAIL  {label}: {reason}")
    return StepRun("+".join(stages), label, run.run_id, seconds, success)


EXPERIMENT_DECLARED_BY = {"cv_splits": "fold_models"}
"""Training overrides given for fold_models also go to cv_splits, which declares the experiment."""


def _run_config(stages: Sequence[Stage], op_config: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Run config of these stages' assets (cv_splits also gets fold_models' overrides: the experiment it
    declares is the one the cells train)."""
    config = dict(op_config)
    for declaring, trained in EXPERIMENT_DECLARED_BY.items():
        if trained in op_config:
            config[declaring] = {**op_config[trained], **op_config.get(declaring, {})}
    names = {key.to_user_string() for s in stages for asset in s.assets for key in asset.keys}
    ops = {name: {"config": dict(cfg)} for name, cfg in config.items() if name in names}
    return {"ops": ops} if ops else {}


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """What stopped a run of the instance (`failure_reason_of` its events)."""
    records = instance.all_logs(
        run_id,
        of_type={
            dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            dg.DagsterEventType.STEP_FAILURE,
            dg.DagsterEventType.RUN_FAILURE,
            dg.DagsterEventType.RUN_CANCELED,
        },
    )
    return failure_reason_of([r.dagster_event for r in records if r.dagster_event is not None])


def failure_reason_of(events: Sequence[Any]) -> str:
    """What stopped a run: a failed blocking check's description (it names the cells or patients), else
    the innermost error message of the first failed step (the user's error, not Dagster's wrapper), else
    the run's own failure or cancellation message."""
    for event in events:
        evaluation = event.event_specific_data if event.event_type_value == "ASSET_CHECK_EVALUATION" else None
        if evaluation is not None and evaluation.blocking and not evaluation.passed:
            return f"check {evaluation.check_name}: {evaluation.description}"
    for event in events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            return f"{event.step_key}: {error.message.strip()}"
    for event in events:
        if event.event_type_value in ("RUN_FAILURE", "RUN_CANCELED") and event.message:
            return str(event.message)
    return "run failed (see the Dagster UI for the log)"


def _progress_bar(total: int) -> Any:
    """A tqdm bar on a terminal (tqdm installed), else None (plain lines)."""
    if not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="partition", leave=False, dynamic_ncols=True)


def daemon_running(instance: dg.DagsterInstance) -> bool:
    """A `dagster-daemon` (ours, `rice dev`'s, a site's) sent heartbeats for this instance recently (not
    Dagster's own 30-minute tolerance: a killed daemon's last heartbeats must not pass for a live one)."""
    statuses = get_daemon_statuses(
        instance,
        instance.get_required_daemon_types(),
        ignore_errors=True,
        heartbeat_tolerance_seconds=HEARTBEAT_TOLERANCE_SECONDS,
    )
    return bool(statuses) and all(status.healthy for status in statuses.values())


@contextlib.contextmanager
def dagster_daemon(
    paths: RicePaths,
    instance: dg.DagsterInstance,
    echo: Callable[[str], None] = print,
    automation: bool = False,
) -> Iterator[bool]:
    """Start `dagster-daemon` for this RICE_HOME unless one is running; stop it on exit. Yields whether
    it started one (`rice_assets.daemon`: the daemon with a 2-s backfill loop).

    The daemon it starts has automation paused (`RICE_AUTOMATION=off`: no sensor, schedule or
    automation condition runs while `rice run` drives the pipeline) unless `automation`; its log is
    `$DAGSTER_HOME/daemon.log`.
    """
    if daemon_running(instance):
        echo("using the running dagster-daemon")
        yield False
        return
    log = paths.dagster_home / "daemon.log"
    env = {
        **os.environ,
        **thread_environment(paths.dagster_home),  # each run process: cores / concurrent runs threads
        "RICE_AUTOMATION": "on" if automation else "off",
        "DAGSTER_HOME": str(paths.dagster_home),
    }
    command = [sys.executable, "-m", "rice_assets.daemon", "run", "-m", "rice_assets.definitions"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    echo(f"started dagster-daemon (pid {process.pid}, log {log})")
    try:
        yield True
    finally:
        _stop(process)
        instance.wipe_daemon_heartbeats()  # a stopped daemon must not look alive to the next `rice run`
        echo("stopped dagster-daemon")


def _stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGINT the daemon (it stops its threads and code server), then SIGKILL its group if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
