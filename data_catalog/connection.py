"""Short, serialised DuckDB transactions on one catalog file.

DuckDB lets only one process open a database file read-write. Dagster runs partitions in parallel
processes, so the catalog never keeps a connection open between calls: each call takes a cross-process
file lock (`<catalog>.lock`), opens a connection, runs one transaction, and closes it. A DuckDB lock
error on connect (some process outside this protocol holds the file, e.g. a notebook) is retried with
exponential backoff until the same deadline.

A process that dies while holding the lock loses it with its file descriptors (flock), and DuckDB
discards its uncommitted transaction on the next open, so a killed run leaves no partial rows.
Waiters announce themselves by touching `<catalog>.lock.waiting`, so that a process writing in a
tight loop steps aside for them instead of starving them.
"""

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import filelock

DEFAULT_TIMEOUT_S = 120.0
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 1.0
_POLL_S = 0.01
_MTIME_SLACK_S = 0.005  # file timestamps come from a coarse kernel clock


class CatalogBusyError(TimeoutError):
    """The catalog stayed locked by another process for longer than the timeout."""


def lock_path(db_path: Path) -> Path:
    """The cross-process lock file that guards `db_path`."""
    return db_path.with_name(db_path.name + ".lock")


def _is_lock_error(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def connect_with_retry(db_path: Path, deadline: float) -> duckdb.DuckDBPyConnection:
    """Open `db_path` read-write, retrying DuckDB file-lock conflicts until `deadline` (monotonic)."""
    delay = _FIRST_BACKOFF_S
    while True:
        try:
            return duckdb.connect(str(db_path))
        except duckdb.Error as error:
            if not _is_lock_error(error):
                raise
            if time.monotonic() + delay > deadline:
                raise CatalogBusyError(f"catalog {db_path} is locked by another process: {error}") from error
        time.sleep(delay * (1.0 + random.random()))
        delay = min(delay * 2.0, _MAX_BACKOFF_S)


def _waiting_marker(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock.waiting")


class _StepAside(threading.local):
    """Per thread: lock paths whose last hold was wanted by a waiter, and until when to step aside."""

    def __init__(self) -> None:
        self.until: dict[Path, float] = {}


_step_aside = _StepAside()


def _acquire(lock: filelock.FileLock, marker: Path, deadline: float) -> float:
    """Take `lock` by polling; return the wall-clock time it was taken.

    filelock polls, so a process that releases and re-takes the lock in a tight loop would starve the
    others. A waiter therefore touches `marker` on every poll; a holder that sees a touch made during
    its hold steps aside for a few poll intervals before its next acquire (see `_release`).
    """
    pause = _step_aside.until.pop(marker, 0.0) - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    while True:
        try:
            lock.acquire(blocking=False)
            return time.time()
        except filelock.Timeout:
            pass
        if time.monotonic() >= deadline:
            raise CatalogBusyError(f"timed out waiting for {lock.lock_file}")
        marker.touch()
        time.sleep(_POLL_S * (0.5 + random.random()))


def _release(lock: filelock.FileLock, marker: Path, acquired_at: float) -> None:
    lock.release()
    try:
        wanted = marker.stat().st_mtime >= acquired_at - _MTIME_SLACK_S
    except FileNotFoundError:
        wanted = False
    if wanted:
        _step_aside.until[marker] = time.monotonic() + 2 * _POLL_S


@contextmanager
def transaction(
    db_path: Path, *, timeout: float = DEFAULT_TIMEOUT_S, write: bool = True
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection inside one transaction, holding the catalog's cross-process lock.

    The transaction commits when the block succeeds and `write` is true; it rolls back when the
    block raises (nothing of it lands) or when `write` is false (a read never changes the file).

    Args:
        db_path: The DuckDB file; created on first use.
        timeout: Seconds to wait for the lock and for DuckDB's own file lock, together.
        write: Commit on success; False rolls back even on success.

    Raises:
        CatalogBusyError: The lock could not be had within `timeout`.
    """
    deadline = time.monotonic() + timeout
    lock = filelock.FileLock(lock_path(db_path), is_singleton=True)
    marker = _waiting_marker(db_path)
    acquired_at = _acquire(lock, marker, deadline)
    try:
        con = connect_with_retry(db_path, deadline)
        try:
            con.begin()
            try:
                yield con
            except BaseException:
                _rollback(con)
                raise
            if write:
                con.commit()
            else:
                _rollback(con)
        finally:
            con.close()
    finally:
        _release(lock, marker, acquired_at)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.rollback()
    except duckdb.Error:
        pass  # no transaction left to roll back; the original error matters, not this one
