import gc
import subprocess
import sys

from rice_models.process import freeze_imported_objects, process_alive


def test_objects_are_frozen_once_per_wave_of_imports() -> None:
    code = """
import gc, sys
from rice_models.process import freeze_imported_objects, process_alive
freeze_imported_objects()
first = gc.get_freeze_count()
data = [[i] for i in range(10_000)]  # built after the imports: must not be frozen by a repeat call
freeze_imported_objects()
same = gc.get_freeze_count() == first
import json, decimal  # a new wave of imports
freeze_imported_objects()
print(first > 0, same, gc.get_freeze_count() > first)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"], out.stdout + out.stderr


def test_a_repeat_call_in_this_process_freezes_nothing_new() -> None:
    freeze_imported_objects()
    frozen = gc.get_freeze_count()
    garbage = [[i] for i in range(1_000)]
    freeze_imported_objects()
    assert gc.get_freeze_count() == frozen and garbage


def test_process_alive_tells_a_running_process_from_an_ended_one() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid), "ended and reaped"
    assert process_alive(1), "init: another user's process counts as alive"
