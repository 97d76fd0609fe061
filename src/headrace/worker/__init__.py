"""`headrace worker`: a process that runs jobs, speaking only the public v1b3 worker API.

It leases work from `projects/-/locations/-/jobs/-/workItems:lease` (any project, region and
job the service has work for), runs each item's pipeline on the local execution backend and
reports on it (worker/item.py). An idle worker polls, starting fast and slowing down to
`worker_poll_seconds`, so a new job is picked up within a fraction of a second while an idle
pool costs the API a few requests per second. SIGTERM (or SIGINT) stops it: the pipeline in
hand is stopped and a shutdown notice releases its work item at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path

import httpx

from headrace import wire
from headrace.config import Config
from headrace.execution.local import LocalBackend
from headrace.worker.client import ServiceError, WorkerApi
from headrace.worker.item import ItemRun
from headrace.worker.messages import Resources

log = logging.getLogger("headrace.worker")

FIRST_POLL = 0.02  # the pause after a lease that found work; doubled while none is found
ERROR_PAUSE = 1.0  # after a failed lease: the service is starting, restarting or refusing us


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(self, config: Config, endpoint: str, worker_id: str | None = None, token: str | None = None):
        self.config = config
        self.api = WorkerApi(endpoint, worker_id or default_worker_id(), token)
        root = Path(config.data_dir).resolve() / "workers"
        self.work_root = root / "work" / self.api.worker_id
        self.backend = LocalBackend(env_cache=root / "envs")
        self.resources = Resources()
        self.started = wire.now()
        self.stopping = threading.Event()

    def serve(self) -> None:
        """Lease and run work until told to stop."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        log.info("Worker %s leasing work from %s", self.api.worker_id, self.api.endpoint)
        self.backend.prepare()
        pause, failing = FIRST_POLL, False
        while not self.stopping.is_set():
            try:
                items = self.api.lease(self.config.worker_lease_seconds)
            except (ServiceError, httpx.HTTPError) as error:
                if not failing:
                    log.warning("Leasing work failed (retrying every %ss): %s", ERROR_PAUSE, error)
                failing = True
                self.stopping.wait(ERROR_PAUSE)
                continue
            failing = False
            if not items:
                self.stopping.wait(pause)
                pause = min(pause * 2, self.config.worker_poll_seconds)
                continue
            pause = FIRST_POLL
            self.run(items[0])
            self.backend.prepare()  # the next run's executor warms up while this worker is idle
        self.backend.close()
        self.api.close()
        log.info("Worker %s stopped", self.api.worker_id)

    def run(self, item: dict) -> None:
        log.info("Leased work item %s of job %s", item["id"], item["jobId"])
        try:
            ItemRun(self, item).run()
        except Exception:  # noqa: BLE001 - a bug of ours fails this item, not the worker
            log.exception("Work item %s of job %s ended with an error in the worker", item["id"], item["jobId"])

    def exit_with_parent(self) -> None:
        """Stop when the process that started us dies, even by kill -9: a pool worker must not
        outlive its `headrace serve`."""
        parent = os.getppid()

        def watch():
            while not self.stopping.wait(0.2):
                if os.getppid() != parent:
                    log.warning("The process that started this worker has exited; stopping")
                    self.stopping.set()

        threading.Thread(target=watch, daemon=True, name="watch-parent").start()
