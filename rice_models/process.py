"""Tuning for the short-lived processes Dagster starts (one per run, which imports a lot and exits),
and `process_alive`, whether a process id is in use.

Python's cyclic garbage collector walks every tracked object in each full collection and once more
when the interpreter exits. torch, MONAI and MLflow leave about 500,000 long-lived objects behind
their imports, and a run process lives for seconds after loading them, so walking them again is a
large share of its time. `gc.freeze()` (Python >= 3.7, the `gc` module's documentation) moves the
objects alive at that moment to a permanent generation that no collection walks.

Measured on 2 cores (one process at a time, `dagster asset materialize` of one partition):
`import monai` then exit: exit 2.0 s -> 0.3 s; a `fold_models` cell 24.4 s -> 20.4 s wall; a
preprocessing run (raw_scans, dose_maps, registered_volumes) 9.3 s -> 8.4 s.
"""

import gc
import os
import sys

_modules_when_frozen = 0


def freeze_imported_objects() -> None:
    """Exempt every object alive now from garbage collection, for the rest of the process, when
    modules were imported since the last call (else nothing: cheap to call at every step).

    Call it right after importing modules (their objects live as long as the process anyway), not
    after building data: a frozen object that later becomes cyclic garbage is never freed (objects
    freed by reference counting still are). The module count guard bounds that in long-lived
    processes that run many steps (a Celery worker, a test session): they freeze once per wave of
    imports, not at every step.
    """
    global _modules_when_frozen
    if len(sys.modules) != _modules_when_frozen:
        _modules_when_frozen = len(sys.modules)
        gc.freeze()


def process_alive(pid: int) -> bool:
    """Whether a process with id `pid` exists (signal 0, kill(2)); one of another user counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
