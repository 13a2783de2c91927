"""Browser fixtures: one small materialised RICE_HOME for the whole session, `rice dev` and `mlflow ui`
serving it on 127.0.0.1, and headless Chromium from Debian's package driven by Playwright.

Chromium is the system one (`apt-get install -y chromium`, done by `.ci/run`); nothing is downloaded
(never `playwright install`). Where it is not installed the tests are skipped with that message, except
in CI (`CI` set), where a missing browser is a failure.

Screenshots go to `$RICE_SCREENSHOTS` when set, else to a temporary folder printed in the test report.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rice_models.synth import generate_cohort

CHROMIUM = Path(os.environ.get("RICE_CHROMIUM", "/usr/bin/chromium"))
COMBINATION = "postop+event+dose"  # one combination keeps the cohort fast; it has the confusion matrix
START_TIMEOUT_S = 120


def _chromium_or_skip() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = (
        f"Chromium not found at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`, as "
        ".ci/run does) or point RICE_CHROMIUM at a Chromium binary to run the browser tests"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    """Wait until `url` answers 200, failing early (with the server's output) if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"server exited with {process.returncode} before {url} answered:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a TCP socket listening on `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> tuple[int, str]:
        """Send `sig` to the server's process group (as Ctrl-C in a terminal does); return its exit
        status and output."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            out, _ = self.process.communicate()
        return int(self.process.returncode), out or ""


def _start(command: list[str], env: dict[str, str], health: str, port: int) -> Server:
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C is sent to the group
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even when started in background
    )
    server = Server(process, f"http://127.0.0.1:{port}", port)
    try:
        wait_for_http(server.url + health, process)
    except BaseException:
        server.stop(signal.SIGKILL, timeout=10)
        raise
    return server


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    return _chromium_or_skip()


@pytest.fixture(scope="session")
def ui_home(tmp_path_factory: pytest.TempPathFactory, chromium_path: Path) -> Path:
    """A RICE_HOME with a 12-patient synthetic cohort (9 development, 2 test, 1 unlabelled) run through
    `rice run` (one combination, one epoch): every asset materialised, the champion registered with
    its alias."""
    home = tmp_path_factory.mktemp("ui") / "home"
    generate_cohort(home / "landing", n_patients=12, seed=8, spacing_mm=4.0, n_test=2, n_unlabelled=1)
    env = {**os.environ, "RICE_HOME": str(home), "RICE_PROFILE": "quick"}
    env.pop("RICE_LANDING", None)
    command = [sys.executable, "-m", "rice_assets.cli", "run", "--combinations", COMBINATION, "--epochs", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return home


@pytest.fixture(scope="session")
def home_env(ui_home: Path) -> dict[str, str]:
    env = {**os.environ, "RICE_HOME": str(ui_home), "RICE_PROFILE": "quick"}
    env.pop("RICE_LANDING", None)
    env.pop("DAGSTER_HOME", None)  # `rice dev` sets it
    return env


@pytest.fixture(scope="session")
def dagster_ui(home_env: dict[str, str]) -> Iterator[Server]:
    """`rice dev` on a free port of 127.0.0.1."""
    port = free_port()
    server = _start(
        [sys.executable, "-m", "rice_assets.cli", "dev", "--port", str(port)], home_env, "/server_info", port
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_ui(ui_home: Path, home_env: dict[str, str]) -> Iterator[Server]:
    """`mlflow ui` on 127.0.0.1 over the RICE_HOME's tracking store."""
    port = free_port()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [
        mlflow,
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{ui_home / 'mlflow.db'}",
    ]
    server = _start(command, home_env, "/health", port)
    yield server
    server.stop(signal.SIGTERM)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("RICE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def shoot(screenshot_dir: Path) -> Callable[..., Path]:
    """Save a screenshot of a page (or of one element) as `<screenshot_dir>/<name>.png`."""

    def take(target, name: str, **kwargs) -> Path:
        path = screenshot_dir / f"{name}.png"
        kwargs.setdefault("animations", "disabled")  # fade-ins finished, not caught half-way
        target.screenshot(path=str(path), **kwargs)
        assert path.stat().st_size > 10_000, f"{path} looks empty"
        print(f"screenshot: {path}")
        return path

    return take
