"""The embedded pool of `headrace serve --workers N`: N `headrace worker` processes.

They are ordinary workers, talking to the server over HTTP like any other, started as
subprocesses so that a pipeline cannot take the API down with it. Each stops itself if the
server dies (even by kill -9); stopping the pool sends them SIGTERM while the API still
serves, so their shutdown notices release the work they hold.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("headrace.worker")

STOP_SECONDS = 10.0


class Pool:
    def __init__(self, size: int, endpoint: str, data_dir: Path, token: str | None = None):
        self.size = size
        self.endpoint = endpoint
        self.data_dir = Path(data_dir).resolve()
        self.token = token
        self.processes: list[subprocess.Popen] = []
        self.logs = self.data_dir / "workers" / "logs"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        for n in range(self.size):
            # The random part keeps ids unique across restarts on the same data dir, so a new
            # worker is never taken for one that held a lease before the restart.
            worker_id = f"{host}-pool-{n}-{secrets.token_hex(2)}"
            command = [sys.executable, "-m", "headrace", "worker", "--endpoint", self.endpoint,
                       "--worker-id", worker_id, "--data-dir", str(self.data_dir), "--exit-with-parent"]
            with open(self.logs / f"worker-{n}.log", "ab") as out:
                self.processes.append(subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=_env(self.token)))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("Worker process %s did not stop in %ss; killing it", process.pid, STOP_SECONDS)
                process.kill()
                process.wait()


def _env(token: str | None) -> dict:
    env = dict(os.environ)
    if token:
        env["HEADRACE_WORKER_TOKEN"] = token  # not on the command line, where `ps` shows it
    return env
