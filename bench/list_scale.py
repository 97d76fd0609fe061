"""jobs.list and jobs.messages.list page latency as the tables grow: pages must cost O(page).

    .venv/bin/python -m bench.list_scale [--largest 100000] [--repeat 40]

Three data dirs are seeded side by side, with `--largest`/100, /10 and /1 jobs (default 1k, 10k,
100k) in one project and region, and ten times as many job messages (10k, 100k, 1M), nearly all
of them in one busy job. Seeding goes through the store functions the server itself uses
(store/jobs.py, store/messages.py) into the SQLite file of each data dir, far faster than the API;
then a `headrace serve` starts on each dir and every figure is measured over HTTP on loopback,
one request at a time (httpx, keep-alive), `--repeat` times each. The three servers take turns
request by request, so the machine's noise (2 shared cores) hits every scale alike.

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
FLAT = 1.5  # largest/smallest lower-quartile latency at or under this counts as flat
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

    def walk(self, path: str, field: str, expected: int, found: dict):
        """Every page of 1,000, one per step (a generator, so scales can take turns); yields each
        page's latency and leaves in `found` the token and first item of every page."""
        token, seen = None, 0
        found.update(tokens=[], firsts=[])
        while True:
            found["tokens"].append(token)
            elapsed, page = self.get(path, pageSize=1000, **({"pageToken": token} if token else {}))
            items = page.get(field, [])
            found["firsts"].append(items[0])
            seen += len(items)
            yield elapsed
            token = page.get("nextPageToken")
            if not token:
                break
        if seen != expected:
            raise RuntimeError(f"walking {path} returned {seen} {field}, expected {expected}")

    def cases(self, jobs: dict, msgs: dict) -> list[tuple]:
        """(name, path, items field, first item's name or text, item count, query) of each page
        of 50 to time, placed by the walks' tokens."""
        n, m = self.n_jobs, self.n_messages + 1  # and the busy job's "created" message, the oldest
        jt, jf, mt, mf = jobs["tokens"], jobs["firsts"], msgs["tokens"], msgs["firsts"]
        jh, jl, mh, ml = len(jt) // 2, len(jt) - 1, len(mt) // 2, len(mt) - 1
        quarter = mf[len(mf) // 4]
        return [
            ("jobs first", self.jobs_path, "jobs", f"etl-{n - 1:07d}", PAGE, {}),
            ("jobs 50%", self.jobs_path, "jobs", jf[jh]["name"], min(PAGE, n - jh * 1000), {"pageToken": jt[jh]}),
            ("jobs last", self.jobs_path, "jobs", jf[jl]["name"], min(PAGE, n - jl * 1000), {"pageToken": jt[jl]}),
            ("jobs ACTIVE", self.jobs_path, "jobs", None, RUNNING, {"filter": "ACTIVE"}),
            ("msgs first", self.msgs_path, "jobMessages", f"Job {self.busy} created.", PAGE, {}),
            ("msgs 50%", self.msgs_path, "jobMessages", mf[mh]["messageText"], min(PAGE, m - mh * 1000),
             {"pageToken": mt[mh]}),
            ("msgs last", self.msgs_path, "jobMessages", mf[ml]["messageText"], min(PAGE, m - ml * 1000),
             {"pageToken": mt[ml]}),
            ("msgs >=WARNING", self.msgs_path, "jobMessages", "Message 90: step s0 processed a bundle.", PAGE,
             {"minimumImportance": "JOB_MESSAGE_WARNING"}),
            ("msgs window", self.msgs_path, "jobMessages", quarter["messageText"], PAGE,
             {"startTime": quarter["time"]}),
        ]

    def page(self, case: tuple) -> float:
        """Time one page of 50; it must hold the expected items."""
        name, path, field, first, count, query = case
        elapsed, page = self.get(path, pageSize=PAGE, **query)
        items = page.get(field, [])
        label = (items[0].get("name") or items[0].get("messageText")) if items else None
        if len(items) != count or (first is not None and label != first):
            raise RuntimeError(f"{name}: got {len(items)} {field} starting {label!r}, "
                               f"expected {count} starting {first!r}")
        return elapsed


def _take_turns(walks: list) -> list[list[float]]:
    """Run generators a step each in turn until all are done; each one's yielded values."""
    out: list[list[float]] = [[] for _ in walks]
    active = dict(enumerate(walks))
    while active:
        for i, walk in list(active.items()):
            try:
                out[i].append(next(walk))
            except StopIteration:
                del active[i]
    return out


def measure(scales: list[Scale], repeat: int) -> dict[str, list[list[float]]]:
    """Latencies of each case at each scale; scales take turns request by request, so the
    machine's noise hits them alike."""
    jobs, msgs = [{} for _ in scales], [{} for _ in scales]
    out = {"jobs walk (1000/page)": _take_turns([s.walk(s.jobs_path, "jobs", s.n_jobs, f)
                                                 for s, f in zip(scales, jobs)]),
           "msgs walk (1000/page)": _take_turns([s.walk(s.msgs_path, "jobMessages", s.n_messages + 1, f)
                                                 for s, f in zip(scales, msgs)])}
    plans = [s.cases(j, m) for s, j, m in zip(scales, jobs, msgs)]
    for index, (name, *_rest) in enumerate(plans[0]):
        out[name] = [[] for _ in scales]
        for _ in range(repeat):
            for k, (scale, plan) in enumerate(zip(scales, plans)):
                out[name][k].append(scale.page(plan[index]))
    return out


def idle_cpu(scales: list[Scale], seconds: float = 3.0) -> list[float]:
    """Each idle server's CPU use (its sweeper runs every second), over the same seconds."""
    processes = [psutil.Process(s.server.process.pid) for s in scales]
    before = [p.cpu_times() for p in processes]
    time.sleep(seconds)
    return [(a.user + a.system - b.user - b.system) / seconds
            for a, b in zip((p.cpu_times() for p in processes), before)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--largest", type=int, default=100_000, help="jobs at the largest scale")
    parser.add_argument("--repeat", type=int, default=40, help="requests per case and scale")
    args = parser.parse_args()
    if args.largest < 10_000:
        parser.error("--largest must be at least 10000, so that the smallest scale fills several pages")
    sizes = [(args.largest // f, 10 * args.largest // f) for f in (100, 10, 1)]

    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
        seeded = []
        for n_jobs, n_messages in sizes:
            data_dir = Path(tmp) / f"jobs-{n_jobs}"
            began = time.perf_counter()
            seeded.append((data_dir, n_jobs, n_messages, seed(data_dir, n_jobs, n_messages)))
            print(f"seeded {n_jobs} jobs and {n_messages + n_jobs} messages in "
                  f"{time.perf_counter() - began:.0f} s", flush=True)
        scales: list[Scale] = []
        try:
            for data_dir, n_jobs, n_messages, busy in seeded:
                scales.append(Scale(data_dir, n_jobs, n_messages, busy))
            results = measure(scales, args.repeat)
            idle = idle_cpu(scales)
        finally:
            for scale in scales:
                scale.close()
    report([f"{n}/{m}" for n, m in sizes], results, idle, args)


def report(names: list[str], results: dict[str, list[list[float]]], idle: list[float], args) -> None:
    print(f"\nmedian page latency in ms (p90 in brackets), {args.repeat} requests per case and scale, pages of "
          f"{PAGE}; {psutil.cpu_count()} cores, load average {psutil.getloadavg()[0]:.1f}")
    print("largest/smallest compares medians and lower quartiles; noise only adds time, so the verdict "
          f"(flat: quartile ratio <= {FLAT}) follows the quartiles")
    print(f"{'jobs/messages':<22}" + "".join(f"{s:>20}" for s in names) + f"{'largest/smallest':>24}")
    for case, per_scale in results.items():
        medians = [statistics.median(times) for times in per_scale]
        cells = "".join(f"{m * 1e3:>11.2f} ({_quantile(t, 0.9) * 1e3:>6.2f})" for m, t in zip(medians, per_scale))
        quartiles = _quantile(per_scale[-1], 0.25) / _quantile(per_scale[0], 0.25)
        print(f"{case:<22}{cells}{medians[-1] / medians[0]:>10.2f} |{quartiles:>6.2f} "
              f"{'flat' if quartiles <= FLAT else 'GROWS'}")
    print(f"{'server idle CPU':<22}" + "".join(f"{c:>19.1%} " for c in idle))


def _quantile(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))]


if __name__ == "__main__":
    main()
