"""A real cluster for the tests: ``dora up`` (API server, scheduler, credit system and a
node agent with the Process driver) over HTTPS on a temporary data folder and CLI config.
``DORA_BIN`` names the binary (default: the repository's target/debug/dora)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from dora_sdk import Client

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """``dora up`` as a child process that can be stopped and started again on the same
    address and data."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.binary = Path(os.environ.get("DORA_BIN", REPO / "target" / "debug" / "dora"))
        if not self.binary.exists():
            raise RuntimeError(f"{self.binary} is missing; build it with `cargo build -p dora`")
        self.config = home / "config.yaml"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.storage = home / "storage"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.home / "up.log").open("ab")
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "up",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.home / "data"),
                "--node-name",
                "sdk",
                "--heartbeat",
                "1s",
                "--credit-slice",
                "1s",
                "--docker",
                "off",
                "--log-level",
                "warn",
            ],
            env={**os.environ, "DORA_CONFIG": str(self.config)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dora up ended: {(self.home / 'up.log').read_text()[-3000:]}")
            if self.config.exists() and self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError("dora up did not become ready within 60 s")

    def ready(self) -> bool:
        try:
            profile = yaml.safe_load(self.config.read_text())["profiles"]["local"]
            from dora_sdk.config import ssl_context

            answer = httpx.get(f"{self.url}/readyz", verify=ssl_context(profile["ca"]), timeout=2)
            return answer.status_code == 200
        except (OSError, KeyError, TypeError, httpx.HTTPError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def profile(self) -> dict[str, str]:
        profile: dict[str, str] = yaml.safe_load(self.config.read_text())["profiles"]["local"]
        return profile


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    # Process containers run as nobody, who must be able to reach the node's folder.
    home = Path(tempfile.mkdtemp(prefix="dora-sdk-"))
    home.chmod(0o711)
    cluster = Cluster(home)
    os.environ["DORA_CONFIG"] = str(cluster.config)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with Client() as client:
        yield client


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test fails the run, as the Rust tests' missing services do."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") == "true" and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
