"""WorkerMessages ingestion: messages/s and latency, next to /healthz on the same server.

    .venv/bin/python -m bench.worker_messages [--seconds 5] [--rounds 3] [--connections 32]

`headrace serve` runs in its own process on a fresh data dir (SQLite, WAL, synchronous=FULL),
so every acknowledged message is durable. This process is the load: `--connections` keep-alive
HTTP/1.1 connections on loopback, each sending its next request as soon as the last is answered
(a closed loop), from one asyncio loop writing raw requests so the client costs little CPU.

Four phases per round, run side by side so the machine's noise hits them alike:
  healthz   GET /healthz: the same uvicorn + Starlette stack answering trivial JSON (the ceiling)
  jobs.get  GET .../jobs/{id}: a read through the whole v1b3 pipeline (routing, auth, codec, a
            worker thread, one SELECT), to tell the API's own cost from ingestion's
  single    POST .../WorkerMessages with 1 message
  batch     POST .../WorkerMessages with 100 messages
Each phase warms up for a second, then is measured for `--seconds`; figures are medians over
rounds (latency percentiles over every measured request).

The messages are what a fleet sends: 4 jobs (created through the API) with 8 workers each;
every worker reports on its own clock, round after round, a health report and CPU/memory
metrics, every 10th round a thread-scaling report, every 20th a message code; on start it sends
its container lifecycle events and HARNESS_STARTED. A batch takes the next 100 messages of the
fleet's interleaved stream, so one request touches many workers of several jobs.

At the end the server is killed with SIGKILL and the store is read back: every CPU/memory sample
and every message code the server acknowledged must be there.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psutil
from sqlalchemy import func, select

from headrace.config import Config
from headrace.store import Store
from headrace.store.schema import job_messages, worker_samples
from tests.conftest import start_server

PROJECT, REGION = "bench", "us-central1"
JOBS, WORKERS_PER_JOB = 4, 8
AIM_BATCH_MESSAGES = 20_000
AIM_SINGLE_RATIO = 0.5


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Worker:
    """One worker's stream of WorkerMessages, on its own clock (10 s between rounds)."""

    def __init__(self, job_id: str, worker_id: str, start: datetime):
        self.labels = {"JOB_ID": job_id, "WORKER_ID": worker_id, "CONTAINER_TYPE": "harness",
                       "CONTAINER_ID": f"{worker_id}-harness"}
        self.start = start
        self.stream = self._messages()

    def _msg(self, at: datetime, **kind) -> dict:
        return {"labels": self.labels, "time": _time(at), **kind}

    def _messages(self):
        boot = self.start
        for offset, event in enumerate(("CONTAINER_START", "SDK_INSTALL_START", "SDK_INSTALL_FINISH")):
            yield self._msg(boot + timedelta(seconds=offset), workerLifecycleEvent={
                "event": event, "containerStartTime": _time(boot)})
        yield self._msg(boot + timedelta(seconds=3), workerMessageCode={"code": "HARNESS_STARTED"})
        for n in itertools.count(1):
            at = boot + timedelta(seconds=10 * n)
            yield self._msg(at, workerHealthReport={"vmIsHealthy": True, "reportInterval": "10s",
                                                    "vmStartupTime": _time(boot)})
            yield self._msg(at, workerMetrics={
                "cpuTime": [{"timestamp": _time(at), "rate": 0.42 + n % 7 / 10, "totalMs": str(4200 * n)}],
                "memoryInfo": [{"timestamp": _time(at), "currentRssBytes": str(900_000_000 + n % 13 * 4096),
                                "currentLimitBytes": "4000000000", "totalGbMs": str(3 * n)}]})
            if n % 10 == 0:
                yield self._msg(at, workerThreadScalingReport={"currentThreadCount": 12})
            if n % 20 == 0:
                yield self._msg(at, workerMessageCode={"code": "LOW_DISK_SPACE", "parameters": {
                    "free_bytes": str(10_000_000 - n), "path": "/var/lib/docker"}})


@dataclass
class Fleet:
    """Every worker's stream, interleaved; counts what was acknowledged, to check it was kept."""
    workers: list[Worker]
    samples_acked: int = 0
    codes_acked: int = 0
    _turn: itertools.cycle = field(init=False)

    def __post_init__(self):
        self._turn = itertools.cycle(self.workers)

    def take(self, n: int) -> tuple[bytes, int, int]:
        """(request body of the next n messages, CPU/memory samples in it, message codes in it)."""
        messages = [next(next(self._turn).stream) for _ in range(n)]
        samples = sum(2 for m in messages if "workerMetrics" in m)
        codes = sum(1 for m in messages if "workerMessageCode" in m)
        return orjson.dumps({"workerMessages": messages}), samples, codes


@dataclass
class Phase:
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float  # busy fraction of one core
    client_cpu: float

    @property
    def cpu_per_request(self) -> float:
        """Server CPU seconds per request: what a quiet machine's throughput would follow."""
        return self.server_cpu * self.seconds / self.requests


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(head[9:12]), await reader.readexactly(length)


async def _drive(port: int, next_request, acknowledge, seconds: float, connections: int) -> tuple[int, list[float]]:
    """Closed-loop load for `seconds`; every request sent is answered before this returns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    latencies: list[float] = []

    async def connection():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while loop.time() < deadline:
                payload, meta = next_request()
                began = time.perf_counter()
                writer.write(payload)
                status, body = await _response(reader)
                latencies.append(time.perf_counter() - began)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:500].decode(errors='replace')}")
                acknowledge(meta, body)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return len(latencies), latencies


def run_phase(server_process: psutil.Process, port: int, next_request, acknowledge,
              seconds: float, connections: int) -> Phase:
    asyncio.run(_drive(port, next_request, acknowledge, 1.0, connections))  # warm-up
    server_before, client_before = server_process.cpu_times(), time.process_time()
    began = time.perf_counter()
    count, latencies = asyncio.run(_drive(port, next_request, acknowledge, seconds, connections))
    wall = time.perf_counter() - began
    server_after = server_process.cpu_times()
    server = (server_after.user + server_after.system - server_before.user - server_before.system) / wall
    return Phase(count, wall, latencies, server, (time.process_time() - client_before) / wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        server = start_server(data_dir, env={"HEADRACE_SWEEP_SECONDS": "1.0"})
        try:
            port = int(server.url.rsplit(":", 1)[1])
            with httpx.Client(base_url=server.url, timeout=30) as http:
                job_ids = [http.post(f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs",
                                     json={"name": f"bench-{j}"}).raise_for_status().json()["id"]
                           for j in range(JOBS)]
            start = datetime.now(timezone.utc)
            fleet = Fleet([Worker(job, f"{job[-6:]}-w{w}", start) for job in job_ids
                           for w in range(WORKERS_PER_JOB)])
            results = run_rounds(psutil.Process(server.process.pid), port, fleet, args)
        finally:
            server.stop(signal.SIGKILL)  # what was acknowledged must survive this
        stored_samples, stored_messages = _stored(data_dir)
    report(results, args)
    print(f"\ndurability after SIGKILL: {stored_samples} of {fleet.samples_acked} acknowledged CPU/memory "
          f"samples stored; {stored_messages} job messages for {fleet.codes_acked} acknowledged message "
          f"codes (+{JOBS} job-created messages)")
    if stored_samples != fleet.samples_acked or stored_messages < fleet.codes_acked + JOBS:
        raise SystemExit("LOST acknowledged writes")


def run_rounds(process: psutil.Process, port: int, fleet: Fleet, args) -> dict[str, list[Phase]]:
    path = f"/v1b3/projects/{PROJECT}/locations/{REGION}/WorkerMessages"
    healthz = _request("GET", "/healthz")
    get_job = _request("GET", f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs/{fleet.workers[0].labels['JOB_ID']}")

    def worker_messages(n: int):
        def next_request():
            body, samples, codes = fleet.take(n)
            return _request("POST", path, body), (n, samples, codes)
        return next_request

    def acknowledge_messages(meta, body: bytes) -> None:
        n, samples, codes = meta
        if len(orjson.loads(body).get("workerMessageResponses", ())) != n:
            raise RuntimeError(f"expected {n} workerMessageResponses, got {body[:300]!r}")
        fleet.samples_acked += samples
        fleet.codes_acked += codes

    phases = {
        "healthz": (lambda: (healthz, None), lambda _m, body: None),
        "jobs.get": (lambda: (get_job, None), lambda _m, body: None),
        "single": (worker_messages(1), acknowledge_messages),
        "batch": (worker_messages(100), acknowledge_messages),
    }
    results: dict[str, list[Phase]] = {name: [] for name in phases}
    for _ in range(args.rounds):
        for name, (next_request, acknowledge) in phases.items():
            results[name].append(run_phase(process, port, next_request, acknowledge,
                                           args.seconds, args.connections))
    return results


def _stored(data_dir: Path) -> tuple[int, int]:
    store = Store(Config(data_dir=data_dir).store_url)
    try:
        with store.read() as conn:
            return (conn.execute(select(func.count()).select_from(worker_samples)).scalar(),
                    conn.execute(select(func.count()).select_from(job_messages)).scalar())
    finally:
        store.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: dict[str, list[Phase]], args) -> None:
    print(f"WorkerMessages ingestion, {args.connections} connections, {args.rounds} rounds x "
          f"{args.seconds:g} s per phase; {psutil.cpu_count()} cores, load average {psutil.getloadavg()[0]:.1f}")
    print(f"{'phase':<10}{'req/s':>9}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}"
          f"{'CPU ms/req':>12}{'client CPU':>12}")
    per_request = {"healthz": 0, "jobs.get": 0, "single": 1, "batch": 100}
    rates = {}
    for name, phases in results.items():
        rate = statistics.median(p.requests / p.seconds for p in phases)
        rates[name] = rate
        latencies = [x for p in phases for x in p.latencies]
        messages = f"{rate * per_request[name]:.0f}" if per_request[name] else "-"
        cpu = statistics.median(p.server_cpu for p in phases)
        print(f"{name:<10}{rate:>9.0f}{messages:>9}{_pct(latencies, 0.5) * 1e3:>9.2f}"
              f"{_pct(latencies, 0.99) * 1e3:>9.2f}{cpu:>12.0%}"
              f"{statistics.median(p.cpu_per_request for p in phases) * 1e3:>12.2f}"
              f"{statistics.median(p.client_cpu for p in phases):>12.0%}")
    ratio = rates["single"] / rates["healthz"]
    batch = rates["batch"] * 100
    print(f"\nsingle messages / healthz requests: {ratio:.2f} (aim >= {AIM_SINGLE_RATIO}: "
          f"{'met' if ratio >= AIM_SINGLE_RATIO else 'MISSED'})")
    print(f"batches of 100: {batch:.0f} messages/s durable (aim >= {AIM_BATCH_MESSAGES}: "
          f"{'met' if batch >= AIM_BATCH_MESSAGES else 'MISSED'})")


if __name__ == "__main__":
    main()
