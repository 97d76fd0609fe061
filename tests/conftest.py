"""Live servers on loopback and the real clients users point at them.

Every test talks HTTP to a `headrace serve` process, through googleapiclient, the GAPIC REST
clients or plain httpx; nothing of ours is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build

from tests import schemas


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen
    log: Path

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(data_dir: Path, *args: str, env: dict | None = None, port: int | None = None) -> Server:
    """`headrace serve` in its own process; returns once /healthz answers."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"server-{port}.log"
    # No embedded workers unless asked for: most tests lease work items by hand.
    full_env = {**os.environ, "HEADRACE_SWEEP_SECONDS": "0.2", "HEADRACE_WORKERS": "0", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "headrace", "serve", "--port", str(port), "--data-dir", str(data_dir), *args],
        env=full_env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    wait_healthy(process, url, log)
    return Server(url, data_dir, process, log)


def wait_for(probe, what: str, timeout: float = 20):
    """probe()'s first truthy value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    """Until `url`/healthz answers 200; the server's log in the error if it never does."""
    # Generous: on a loaded 2-core machine (pipelines of other tests running) imports are slow.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("headrace"))
    yield srv
    srv.stop()


def start_server_with_workers(data_dir: Path, workers: int = 2, env: dict | None = None,
                              port: int | None = None) -> Server:
    """`headrace serve --workers N`: the API with an embedded pool that really runs jobs."""
    return start_server(data_dir, "--workers", str(workers), env=env, port=port)


@pytest.fixture
def project() -> str:
    """A project of the test's own, so tests sharing a server never see each other's jobs."""
    return f"p-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def discovery_client(url: str):
    return build("dataflow", "v1b3", credentials=AnonymousCredentials(),
                 client_options={"api_endpoint": url}, cache_discovery=False)


@pytest.fixture
def df(server):
    return discovery_client(server.url)


@pytest.fixture
def gapic(server):
    from google.cloud import dataflow_v1beta3 as dataflow

    options = ClientOptions(api_endpoint=server.url)
    kw = dict(credentials=AnonymousCredentials(), client_options=options, transport="rest")
    return {
        "jobs": dataflow.JobsV1Beta3Client(**kw),
        "messages": dataflow.MessagesV1Beta3Client(**kw),
        "metrics": dataflow.MetricsV1Beta3Client(**kw),
        "snapshots": dataflow.SnapshotsV1Beta3Client(**kw),
        "templates": dataflow.TemplatesServiceClient(**kw),
        "flex": dataflow.FlexTemplatesServiceClient(**kw),
    }


@pytest.fixture
def check():
    """check(value, "Job") asserts a response matches its discovery schema."""
    return schemas.check
