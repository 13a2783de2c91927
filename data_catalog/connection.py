"""Short DuckDB transactions on one catalog file: serialised writers, lock-free readers.

DuckDB lets one process open a database file read-write, or many processes open it read-only
(https://duckdb.org/docs/current/connect/concurrency). Dagster runs partitions in parallel
processes, so the catalog never keeps a connection open between calls:

- a write (`transaction`) takes a cross-process file lock (`<catalog>.lock`) that orders the
  writers, opens a read-write connection, runs one transaction, commits and closes it;
- a read (`read_transaction`) takes no lock of ours: it opens a read-only connection, which DuckDB
  lets many processes hold at once, and closes it. A reader therefore never waits for the writers'
  queue, only (briefly) for the one connection a writer holds open at that moment.

A DuckDB lock error on connect (a writer is connected while a reader opens, readers are connected
while a writer opens, or some process outside this protocol holds the file, e.g. a notebook) is
retried with exponential backoff until the same deadline.

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


def _is_config_clash(error: duckdb.Error) -> bool:
    """This process already holds the file with the other access mode (a read nested in a write)."""
    return isinstance(error, duckdb.ConnectionException) and "different configuration" in str(error)


def connect_with_retry(
    db_path: Path, deadline: float, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open `db_path`, retrying DuckDB file-lock conflicts until `deadline` (monotonic).

    Args:
        db_path: the DuckDB file.
        deadline: `time.monotonic()` value after which a conflict raises.
        read_only: open read-only (many processes may); when this process already holds the file
            read-write (a read inside a write), its read-write database is shared instead.

    Raises:
        CatalogBusyError: still locked by another process at the deadline.
    """
    delay = _FIRST_BACKOFF_S
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.Error as error:
            if read_only and _is_config_clash(error):
                return duckdb.connect(str(db_path))  # same process, same database instance
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


@contextmanager
def read_transaction(
    db_path: Path, *, timeout: float = DEFAULT_TIMEOUT_S
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a read-only connection inside one transaction (rolled back), without the writers' lock.

    Raises:
        CatalogBusyError: a writer kept DuckDB's file lock for longer than `timeout`.
        duckdb.IOException: the file does not exist (open the `Catalog` once to create it).
    """
    con = connect_with_retry(db_path, time.monotonic() + timeout, read_only=True)
    try:
        con.begin()
        try:
            yield con
        finally:
            _rollback(con)
    finally:
        con.close()


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.rollback()
    except duckdb.Error:
        pass  # no transaction left to roll back; the original error matters, not this one
