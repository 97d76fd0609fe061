"""jobs.list and jobs.messages.list page latency as the tables grow: pages must cost O(page).

    .venv/bin/python -m bench.list_scale [--largest 100000] [--repeat 40]

Three data dirs are seeded side by side, with `--largest`/100, /10 and /1 jobs (default 1k, 10k,
100k) in one project and region, and ten times as many job messages (10k, 100k, 1M), nearly all
of them in one busy job. Seeding goes through the store functions the server itself uses
(store/jobs.py, store/messages.py) into the SQLite file of each data dir, far faster than the API;
then `headrace serve` starts on each dir in turn and every figure is measured over HTTP on
loopback, one request at a time (httpx, keep-alive), `--repeat` times each.

What is seeded looks like a long-lived installation: jobs newest last, each a ~2 KB Dataflow Job
(environment, a few steps, labels); all finished (DONE, some FAILED or CANCELLED) except 20
running ones spread through history; messages mostly DETAILED/BASIC with 8% WARNING and 2% ERROR,
and an autoscaling event every 1,000 messages.

Cases, each with a page of 50 (the default):
  jobs first          the newest jobs
  jobs 50% / last     pages halfway and at the end, by a token from walking every page
  jobs ACTIVE         filter=ACTIVE: the 20 running jobs among all the finished ones
  msgs first          the busy job's oldest messages
  msgs 50% / last     pages halfway and at the end, by a token from walking every page
  msgs >=WARNING      minimumImportance=JOB_MESSAGE_WARNING, first page
  msgs window         startTime a quarter of the way through the job's messages, first page
The walks themselves (pages of 1,000, following nextPageToken to the end) check that every job
and message comes back exactly once, and are timed too. Also shown: the server's CPU while idle
(its sweeper runs every second), since upkeep that grows with the tables costs like a slow page.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil

from headrace.config import Config
from headrace.service.jobs import message as job_message, new_job_id
from headrace.store import Store
from headrace.store import jobs as job_rows
from headrace.store import messages as message_rows
from tests.conftest import start_server

PROJECT, REGION = "bench", "us-central1"
RUNNING = 20
PAGE = 50
FLAT = 1.5  # largest/smallest median latency at or under this counts as flat
BASE = datetime(2025, 1, 1, tzinfo=timezone.utc)
IMPORTANCE = ["DETAILED"] * 60 + ["BASIC"] * 20 + ["DEBUG"] * 10 + ["WARNING"] * 8 + ["ERROR"] * 2


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _job(i: int, running: bool) -> dict:
    created = BASE + timedelta(minutes=i)
    state = "JOB_STATE_RUNNING" if running else ("JOB_STATE_DONE", "JOB_STATE_DONE", "JOB_STATE_DONE",
                                                 "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")[i % 5]
    steps = [{"kind": kind, "name": f"s{n}", "properties": {
        "user_name": f"{kind} {n}", "output_info": [{"user_name": "out", "output_name": "out"}]}}
        for n, kind in enumerate(("ParallelRead", "ParallelDo", "GroupByKey", "ParallelDo", "ParallelWrite"))]
    return {
        "id": new_job_id(created), "projectId": PROJECT, "location": REGION, "name": f"etl-{i:07d}",
        "type": "JOB_TYPE_BATCH", "currentState": state, "currentStateTime": _time(created + timedelta(seconds=90)),
        "createTime": _time(created), "startTime": _time(created), "labels": {"team": "data", "run": str(i)},
        "environment": {"tempStoragePrefix": "gs://bench/tmp", "serviceAccountEmail": "sa@bench.iam",
                        "workerRegion": REGION, "experiments": ["use_runner_v2", "use_portable_job_submission"],
                        "sdkPipelineOptions": {"options": {"project": PROJECT, "job_name": f"etl-{i:07d}"}}},
        "steps": steps, "jobMetadata": {"sdkVersion": {"version": "2.77.0", "sdkSupportStatus": "SUPPORTED"}},
    }


def seed(data_dir: Path, n_jobs: int, n_messages: int) -> str:
    """Seed the data dir; returns the id of the busy job."""
    data_dir.mkdir(parents=True)
    store = Store(Config(data_dir=data_dir).store_url)
    running = set(range(n_jobs // (2 * RUNNING), n_jobs, n_jobs // RUNNING))
    busy = None
    try:
        for start in range(0, n_jobs, 10_000):
            with store.write() as conn:
                for i in range(start, min(start + 10_000, n_jobs)):
                    job = _job(i, i in running)
                    job_rows.insert(conn, job)
                    message_rows.insert_many(conn, job["id"], [job_message("BASIC", f"Job {job['id']} created.",
                                                                           job["createTime"])])
                    if i == n_jobs // 2:
                        busy = job["id"]
        begin = BASE + timedelta(days=365)
        for start in range(0, n_messages, 50_000):
            with store.write() as conn:
                count = min(50_000, n_messages - start)
                message_rows.insert_many(conn, busy, [
                    job_message(IMPORTANCE[k % len(IMPORTANCE)], f"Message {k}: step s{k % 5} processed a bundle.",
                                _time(begin + timedelta(milliseconds=10 * k)))
                    for k in range(start, start + count)])
                for k in range(start, start + count, 1000):
                    message_rows.insert_event(conn, busy, {
                        "time": _time(begin + timedelta(milliseconds=10 * k)), "eventType": "TARGET_NUM_WORKERS_CHANGED",
                        "currentNumWorkers": str(k % 7 + 1), "targetNumWorkers": str(k % 7 + 2),
                        "description": {"messageText": "Autoscaling: raised the number of workers."}})
    finally:
        store.close()
    return busy


class Scale:
    """One seeded data dir, with its server running."""

    def __init__(self, data_dir: Path, n_jobs: int, n_messages: int, busy: str):
        self.n_jobs, self.n_messages, self.busy = n_jobs, n_messages, busy
        self.server = start_server(data_dir, env={"HEADRACE_SWEEP_SECONDS": "1.0"})
        self.http = httpx.Client(base_url=self.server.url, timeout=120)
        self.jobs_path = f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs"
        self.msgs_path = f"{self.jobs_path}/{busy}/messages"

    def close(self) -> None:
        self.http.close()
        self.server.stop()

    def get(self, path: str, **params) -> tuple[float, dict]:
        began = time.perf_counter()
        response = self.http.get(path, params=params)
        elapsed = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} {params}: HTTP {response.status_code} {response.text[:300]}")
        return elapsed, response.json()

    def walk(self, path: str, field: str, expected: int) -> tuple[list[float], list[str | None], list[dict]]:
        """Every page of 1,000: (latencies, the token of each page, the first item of each page)."""
        latencies, tokens, firsts, token, seen = [], [], [], None, 0
        while True:
            tokens.append(token)
            elapsed, page = self.get(path, pageSize=1000, **({"pageToken": token} if token else {}))
            latencies.append(elapsed)
            items = page.get(field, [])
            firsts.append(items[0])
            seen += len(items)
            token = page.get("nextPageToken")
            if not token:
                break
        if seen != expected:
            raise RuntimeError(f"walking {path} returned {seen} {field}, expected {expected}")
        return latencies, tokens, firsts

    def idle_cpu(self, seconds: float = 3.0) -> float:
        process = psutil.Process(self.server.process.pid)
        before = process.cpu_times()
        time.sleep(seconds)
        after = process.cpu_times()
        return (after.user + after.system - before.user - before.system) / seconds


def measure(scale: Scale, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}

    def case(name: str, path: str, field: str, first: str | None, count: int, **params) -> None:
        """Time a page of 50 `repeat` times; its first item's text must be `first`."""
        times = []
        for _ in range(repeat):
            elapsed, page = scale.get(path, pageSize=PAGE, **params)
            items = page.get(field, [])
            label = items[0].get("name") or items[0].get("messageText") if items else None
            if len(items) != count or (first is not None and label != first):
                raise RuntimeError(f"{name}: got {len(items)} {field} starting {label!r}, "
                                   f"expected {count} starting {first!r}")
            times.append(elapsed)
        out[name] = times

    n = scale.n_jobs
    walk, tokens, firsts = scale.walk(scale.jobs_path, "jobs", n)
    out["jobs walk (1000/page)"] = walk
    half, last = len(tokens) // 2, len(tokens) - 1
    case("jobs first", scale.jobs_path, "jobs", f"etl-{n - 1:07d}", PAGE)
    case("jobs 50%", scale.jobs_path, "jobs", firsts[half]["name"], min(PAGE, n - half * 1000), pageToken=tokens[half])
    case("jobs last", scale.jobs_path, "jobs", firsts[last]["name"], min(PAGE, n - last * 1000),
         pageToken=tokens[last])
    case("jobs ACTIVE", scale.jobs_path, "jobs", None, RUNNING, filter="ACTIVE")

    m = scale.n_messages + 1  # and the busy job's "created" message, the oldest
    walk, tokens, firsts = scale.walk(scale.msgs_path, "jobMessages", m)
    out["msgs walk (1000/page)"] = walk
    half, last = len(tokens) // 2, len(tokens) - 1
    case("msgs first", scale.msgs_path, "jobMessages", f"Job {scale.busy} created.", PAGE)
    case("msgs 50%", scale.msgs_path, "jobMessages", firsts[half]["messageText"], min(PAGE, m - half * 1000),
         pageToken=tokens[half])
    case("msgs last", scale.msgs_path, "jobMessages", firsts[last]["messageText"],
         min(PAGE, m - last * 1000), pageToken=tokens[last])
    case("msgs >=WARNING", scale.msgs_path, "jobMessages", "Message 90: step s0 processed a bundle.", PAGE,
         minimumImportance="JOB_MESSAGE_WARNING")
    quarter = firsts[len(firsts) // 4]
    case("msgs window", scale.msgs_path, "jobMessages", quarter["messageText"], PAGE, startTime=quarter["time"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--largest", type=int, default=100_000, help="jobs at the largest scale")
    parser.add_argument("--repeat", type=int, default=40, help="requests per case")
    args = parser.parse_args()
    if args.largest < 10_000:
        parser.error("--largest must be at least 10000, so that the smallest scale fills several pages")
    sizes = [(args.largest // f, 10 * args.largest // f) for f in (100, 10, 1)]

    results: dict[str, dict] = {}
    idle: list[float] = []
    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
        for n_jobs, n_messages in sizes:
            data_dir = Path(tmp) / f"jobs-{n_jobs}"
            began = time.perf_counter()
            busy = seed(data_dir, n_jobs, n_messages)
            print(f"seeded {n_jobs} jobs and {n_messages + n_jobs} messages in "
                  f"{time.perf_counter() - began:.0f} s", flush=True)
            scale = Scale(data_dir, n_jobs, n_messages, busy)
            try:
                results[f"{n_jobs}/{n_messages}"] = measure(scale, args.repeat)
                idle.append(scale.idle_cpu())
            finally:
                scale.close()
    report(results, idle, args)


def report(results: dict[str, dict], idle: list[float], args) -> None:
    print(f"\nmedian page latency in ms (p90 in brackets), {args.repeat} requests per case, pages of {PAGE}; "
          f"{psutil.cpu_count()} cores, load average {psutil.getloadavg()[0]:.1f}")
    scales = list(results)
    print(f"{'jobs/messages':<22}" + "".join(f"{s:>20}" for s in scales) + f"{'largest/smallest':>18}")
    for case in results[scales[0]]:
        medians = [statistics.median(results[s][case]) for s in scales]
        cells = "".join(f"{m * 1e3:>11.2f} ({_p90(results[s][case]) * 1e3:>6.2f})" for m, s in zip(medians, scales))
        ratio = medians[-1] / medians[0]
        verdict = "flat" if ratio <= FLAT else "GROWS"
        print(f"{case:<22}{cells}{ratio:>12.2f} {verdict}")
    print(f"{'server idle CPU':<22}" + "".join(f"{c:>19.1%} " for c in idle))


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


if __name__ == "__main__":
    main()
