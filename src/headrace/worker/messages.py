"""What a worker tells the service through WorkerMessages while it works on a job.

Every message carries the labels Dataflow's workers use (JOB_ID, WORKER_ID, CONTAINER_TYPE,
CONTAINER_ID). A worker of Headrace starts one "container" per work item it runs: the
executor process and the SDK workers under it, so lifecycle events are grouped by that run's
start time, as Dataflow groups them across container restarts.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from headrace import wire

CONTAINER_TYPE = "worker"


@dataclass
class Container:
    job_id: str
    worker_id: str
    start: datetime = field(default_factory=wire.now)
    container_id: str = field(default_factory=lambda: secrets.token_hex(6))

    def message(self, **content) -> dict:
        labels = {"JOB_ID": self.job_id, "WORKER_ID": self.worker_id,
                  "CONTAINER_TYPE": CONTAINER_TYPE, "CONTAINER_ID": self.container_id}
        return {"labels": labels, "time": wire.format_time(wire.now()), **content}

    def lifecycle(self, event: str, **metadata: str) -> dict:
        body = {"event": event, "containerStartTime": wire.format_time(self.start)}
        if metadata:
            body["metadata"] = metadata
        return self.message(workerLifecycleEvent=body)

    def code(self, code: str, **parameters) -> dict:
        return self.message(workerMessageCode={"code": code, **({"parameters": parameters} if parameters else {})})

    def health(self, report_interval: float, vm_startup: datetime) -> dict:
        return self.message(workerHealthReport={
            "vmIsHealthy": True, "vmStartupTime": wire.format_time(vm_startup),
            "reportInterval": wire.format_duration(report_interval)})

    def shutdown(self, reason: str) -> dict:
        return self.message(workerShutdownNotice={"reason": reason})


class Resources:
    """CPU time and memory of the worker's process tree: itself, the executor, the SDK
    workers and whatever they start (pip, user subprocesses).

    CPU time is kept per process as last seen, and that of a process that has exited is
    kept in `exited`, so `totalMs` only grows, as Dataflow's "since start-up" total does."""

    def __init__(self):
        self.root = psutil.Process(os.getpid())
        self.cpu_seconds: dict[tuple[int, float], float] = {}  # (pid, create time) -> seconds
        self.exited = 0.0
        self.gb_ms = 0.0
        self.last: tuple[float, float, float] | None = None  # (monotonic time, cpu seconds, rss bytes)
        self.cores = psutil.cpu_count() or 1
        self.limit = psutil.virtual_memory().total

    def sample(self) -> dict:
        rss, seen = 0, {}
        for process in [self.root, *self._children()]:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    seen[(process.pid, process.create_time())] = times.user + times.system
                    rss += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # gone between listing and reading: its last reading is kept below
        self.exited += sum(v for k, v in self.cpu_seconds.items() if k not in seen)
        self.cpu_seconds = seen
        now, cpu = time.monotonic(), self.exited + sum(seen.values())
        stamp = wire.format_time(wire.now())
        cpu_sample = {"timestamp": stamp, "totalMs": str(int(cpu * 1000))}
        if self.last is not None and now > self.last[0]:
            elapsed = now - self.last[0]
            # Share of the machine's cores busy with this worker's work since the last sample.
            cpu_sample["rate"] = round(max(0.0, cpu - self.last[1]) / elapsed / self.cores, 4)
            self.gb_ms += (rss + self.last[2]) / 2 / 1e9 * elapsed * 1000
        self.last = (now, cpu, rss)
        memory = {"timestamp": stamp, "currentRssBytes": str(rss), "currentLimitBytes": str(self.limit),
                  "totalGbMs": str(int(self.gb_ms))}
        return {"cpuTime": [cpu_sample], "memoryInfo": [memory]}

    def _children(self) -> list[psutil.Process]:
        try:
            return self.root.children(recursive=True)
        except psutil.Error:
            return []
