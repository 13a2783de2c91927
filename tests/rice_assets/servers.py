"""Real Redis and PostgreSQL servers for the scale-out tests, started on 127.0.0.1 on a free port and
stopped after (Debian's `redis-server` and `postgresql`; `.ci/run` installs them)."""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throw-away Redis on 127.0.0.1 (no persistence); yields its URL without a database number."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run does)")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with (folder / "redis.log").open("w") as log:
        process = subprocess.Popen([*args, "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, object]]:
    """A throw-away PostgreSQL cluster (initdb into a new folder of the system's temporary directory, which
    the `postgres` user can reach; trust auth on 127.0.0.1; database `dagster`), removed after; yields its
    connection as dagster-postgres's `postgres_db` config (hostname, port, username, db_name)."""
    if not POSTGRES_BIN_DIRS:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql; .ci/run does)")
    with tempfile.TemporaryDirectory(prefix="rice-postgres-") as tmp:
        folder = Path(tmp)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        with _postgres_in(folder, POSTGRES_BIN_DIRS[0]) as url:
            yield url


@contextlib.contextmanager
def _postgres_in(folder: Path, bin_dir: Path) -> Iterator[dict[str, object]]:
    user = _as_postgres_user()
    data = folder / "pgdata"
    port = free_port()
    initdb = [*user, str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8"]
    subprocess.run(initdb, check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} -c fsync=off"
    log = folder / "postgres.log"
    pg_ctl = str(bin_dir / "pg_ctl")
    subprocess.run([*user, pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], check=True)
    try:
        subprocess.run(
            [
                *user,
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "dagster",
                "dagster",
            ],
            check=True,
        )
        yield {"hostname": "127.0.0.1", "port": port, "username": "dagster", "db_name": "dagster"}
    finally:
        subprocess.run([*user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
