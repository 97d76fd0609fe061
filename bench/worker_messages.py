"""WorkerMessages ingestion: messages/s and latency, next to /healthz on the same server.

    .venv/bin/python -m bench.worker_messages [--seconds 5] [--rounds 3] [--connections 32]
                                              [--baseline-src DIR]

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

With `--baseline-src`, a second server runs the code of another tree (its `src/` put first on
PYTHONPATH, e.g. `git archive REV src | tar -x -C /tmp/base` then `--baseline-src /tmp/base/src`),
on its own data dir, taking turns with this tree's phase by phase: a before/after in one run.
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
from tests.conftest import Server, start_server

PROJECT, REGION = "bench", "us-central1"
JOBS, WORKERS_PER_JOB = 4, 8
AIM_BATCH_MESSAGES = 20_000
AIM_SINGLE_RATIO = 0.5
PER_REQUEST = {"healthz": 0, "jobs.get": 0, "single": 1, "batch": 100}  # messages in a request


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


@dataclass
class Target:
    """One server under load, with its own data dir, jobs and fleet."""
    name: str
    data_dir: Path
    server: Server
    fleet: Fleet

    @classmethod
    def start(cls, name: str, data_dir: Path, env: dict) -> "Target":
        server = start_server(data_dir, env={"HEADRACE_SWEEP_SECONDS": "1.0", **env})
        with httpx.Client(base_url=server.url, timeout=30) as http:
            job_ids = [http.post(f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs",
                                 json={"name": f"bench-{j}"}).raise_for_status().json()["id"]
                       for j in range(JOBS)]
        start = datetime.now(timezone.utc)
        return cls(name, data_dir, server, Fleet([Worker(job, f"{job[-6:]}-w{w}", start) for job in job_ids
                                                  for w in range(WORKERS_PER_JOB)]))

    def phases(self) -> dict:
        """phase name: (next request, check and count its answer)."""
        fleet, path = self.fleet, f"/v1b3/projects/{PROJECT}/locations/{REGION}/WorkerMessages"
        healthz = _request("GET", "/healthz")
        get_job = _request("GET", f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs/"
                                  f"{fleet.workers[0].labels['JOB_ID']}")

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

        return {
            "healthz": (lambda: (healthz, None), lambda _m, body: None),
            "jobs.get": (lambda: (get_job, None), lambda _m, body: None),
            "single": (worker_messages(1), acknowledge_messages),
            "batch": (worker_messages(100), acknowledge_messages),
        }

    def check_durable(self) -> None:
        """After SIGKILL: every acknowledged sample and message code must be in the store."""
        stored_samples, stored_messages = _stored(self.data_dir)
        print(f"{self.name}: durability after SIGKILL: {stored_samples} of {self.fleet.samples_acked} "
              f"acknowledged CPU/memory samples stored; {stored_messages} job messages for "
              f"{self.fleet.codes_acked} acknowledged message codes (+{JOBS} job-created messages)")
        if stored_samples != self.fleet.samples_acked or stored_messages < self.fleet.codes_acked + JOBS:
            raise SystemExit(f"{self.name}: LOST acknowledged writes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="the src/ dir of another Headrace tree (e.g. from `git archive REV src`): "
                             "its server runs beside this tree's, phases taking turns, for a before/after")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
        targets: list[Target] = []
        try:
            targets.append(Target.start("this tree", Path(tmp) / "data", {}))
            if args.baseline_src:
                targets.append(Target.start("baseline", Path(tmp) / "baseline",
                                            {"PYTHONPATH": str(args.baseline_src.resolve())}))
            results = run_rounds(targets, args)
        finally:
            for target in targets:
                target.server.stop(signal.SIGKILL)  # what was acknowledged must survive this
        for target in targets:
            report(target.name, results[target.name], args)
        if args.baseline_src:
            compare(results, args.baseline_src)
        print()
        for target in targets:
            target.check_durable()


def run_rounds(targets: list[Target], args) -> dict[str, dict[str, list[Phase]]]:
    """target: phase: one Phase per round."""
    results: dict[str, dict[str, list[Phase]]] = {t.name: {} for t in targets}
    plans = [(t, psutil.Process(t.server.process.pid), int(t.server.url.rsplit(":", 1)[1]), t.phases())
             for t in targets]
    for _ in range(args.rounds):
        for name in plans[0][3]:
            for target, process, port, phases in plans:
                next_request, acknowledge = phases[name]
                results[target.name].setdefault(name, []).append(
                    run_phase(process, port, next_request, acknowledge, args.seconds, args.connections))
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


def _rate(phases: list[Phase]) -> float:
    return statistics.median(p.requests / p.seconds for p in phases)


def report(name: str, results: dict[str, list[Phase]], args) -> None:
    print(f"WorkerMessages ingestion ({name}), {args.connections} connections, {args.rounds} rounds x "
          f"{args.seconds:g} s per phase; {psutil.cpu_count()} cores, load average {psutil.getloadavg()[0]:.1f}")
    print(f"{'phase':<10}{'req/s':>9}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}"
          f"{'CPU ms/req':>12}{'client CPU':>12}")
    for phase, phases in results.items():
        rate, per_request = _rate(phases), PER_REQUEST[phase]
        latencies = [x for p in phases for x in p.latencies]
        messages = f"{rate * per_request:.0f}" if per_request else "-"
        print(f"{phase:<10}{rate:>9.0f}{messages:>9}{_pct(latencies, 0.5) * 1e3:>9.2f}"
              f"{_pct(latencies, 0.99) * 1e3:>9.2f}{statistics.median(p.server_cpu for p in phases):>12.0%}"
              f"{statistics.median(p.cpu_per_request for p in phases) * 1e3:>12.2f}"
              f"{statistics.median(p.client_cpu for p in phases):>12.0%}")
    ratio = _rate(results["single"]) / _rate(results["healthz"])
    batch = _rate(results["batch"]) * 100
    print(f"single messages / healthz requests: {ratio:.2f} (aim >= {AIM_SINGLE_RATIO}: "
          f"{'met' if ratio >= AIM_SINGLE_RATIO else 'MISSED'})")
    print(f"batches of 100: {batch:.0f} messages/s durable (aim >= {AIM_BATCH_MESSAGES}: "
          f"{'met' if batch >= AIM_BATCH_MESSAGES else 'MISSED'})\n")


def compare(results: dict[str, dict[str, list[Phase]]], baseline: Path) -> None:
    print(f"this tree / baseline ({baseline}):")
    for phase in ("single", "batch"):
        ours, theirs = results["this tree"][phase], results["baseline"][phase]
        cpu = [statistics.median(p.cpu_per_request for p in x) for x in (ours, theirs)]
        print(f"  {phase:<8} req/s x{_rate(ours) / _rate(theirs):.2f}   server CPU per request x{cpu[0] / cpu[1]:.2f}")


if __name__ == "__main__":
    main()
