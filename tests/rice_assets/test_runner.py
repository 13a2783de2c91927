"""`rice run` through the daemon on a tiny synthetic cohort, one patient broken: backfills on the
instance, the failure reported by name, and a second `rice run` that resumes instead of redoing; Ctrl-C
cancels the backfill."""

import os
import re
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import BACKFILL_ID_TAG

from rice_assets.stages import STAGES
from rice_models.synth import generate_cohort
from tests.rice_assets.helpers import rice_run


@pytest.mark.slow
def test_rice_run_backfills_reports_the_broken_patient_and_resumes(rice_home) -> None:
    paths = rice_home
    generate_cohort(paths.landing, n_patients=3, seed=4, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    broken = paths.landing / "SYN-0002" / "mri_event.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    lines: list[str] = []
    first = rice_run(paths, echo=lines.append, stages=STAGES[:2])
    assert list(first.failures) == ["preprocessing SYN-0002"], lines
    assert "SYN-0002" in first.failures["preprocessing SYN-0002"]
    assert "mri_event.nii.gz" in first.failures["preprocessing SYN-0002"]
    for pid in ("SYN-0001", "SYN-0003"):
        assert (paths.lake_dir("registered_volumes", pid, "quick") / "dose.nii.gz").is_file()
    assert not paths.lake_dir("registered_volumes", "SYN-0002", "quick").exists()
    assert any(line.startswith("  ok    cohort") for line in lines)

    with dg.DagsterInstance.get() as instance:
        backfills = instance.get_backfills()
        assert {b.backfill_id for b in backfills} == set(first.backfills), "on the UI's Backfills page"
        runs = instance.get_runs(dg.RunsFilter(tags={BACKFILL_ID_TAG: first.backfills[1]}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["SYN-0001", "SYN-0002", "SYN-0003"]

    second = rice_run(paths, echo=lines.append, stages=STAGES[:2])
    assert second.skipped == {"preprocessing": 2}, "the two current patients are not redone"
    assert [run.label for run in second.runs if run.stage == "preprocessing"] == ["preprocessing SYN-0002"]
    assert list(second.failures) == ["preprocessing SYN-0002"], "the broken one is tried again"


@pytest.mark.slow
def test_ctrl_c_cancels_the_backfill_and_exits_cleanly(rice_home) -> None:
    """Ctrl-C in the terminal (SIGINT to `rice run`'s process group, as a shell sends it; the daemon it
    started has its own session) while preprocessing runs: the backfill and its runs are cancelled, no
    traceback, exit status 130."""
    generate_cohort(rice_home.landing, n_patients=4, seed=5, spacing_mm=4.0, n_test=0, n_unlabelled=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rice_assets.cli", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as a terminal's shell starts it: SIGINT at its default, even when this test runs in a background
        # job (where the shell ignores SIGINT and every child, Python included, inherits that)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: list[str] = []
    backfill_id = None
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"preprocessing: backfill (\S+)", line)
        if found:
            backfill_id = found.group(1)
            break
    assert backfill_id, "".join(lines)
    with dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + 120
        while not instance.get_runs(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})):
            assert time.monotonic() < deadline, "the daemon launched no run of the backfill"
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    assert f"backfill {backfill_id} cancelled" in output and "again resumes" in output
    with dg.DagsterInstance.get() as instance:
        backfill = instance.get_backfill(backfill_id)
        assert backfill is not None and backfill.status == BulkActionStatus.CANCELED
        runs = instance.get_runs(dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
        assert runs and all(r.status in (DagsterRunStatus.CANCELED, DagsterRunStatus.SUCCESS) for r in runs)
        assert any(r.status == DagsterRunStatus.CANCELED for r in runs), "Ctrl-C came after every run ended"
