"""The floor: what a durable WorkerMessages endpoint costs on Headrace's stack with nothing else.

    .venv/bin/python -m bench.floor [--seconds 4] [--rounds 3] [--connections 32]

The issue asks single-message WorkerMessages to reach half the requests/s of `GET /healthz` on
the same server. This measures how much room that leaves. The floor app here is the least a
durable endpoint can do on the same stack: uvicorn + httptools, a Starlette app with the same
`/healthz` route and a plain ASGI endpoint under `/v1b3/{path:path}`, the same GC settings as
`headrace serve`. Per request it parses the JSON, queues the messages for a group commit,
answers once the commit is done. The commit reads and rewrites one registry row per worker and
inserts the CPU sample rows. It uses SQLite through the stdlib driver, WAL, `synchronous=FULL`.
No routing, validation, auth, registry logic or code translation.

It runs beside this tree's `headrace serve`, phases taking turns (healthz, single, batch).
Both are killed with SIGKILL at the end, and both stores must hold every acknowledged sample.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import psutil
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from bench.worker_messages import PER_REQUEST, Fleet, Phase, Target, Worker, _rate, run_phase
from tests.conftest import Server, free_port, wait_healthy

PHASES = ("healthz", "single", "batch")


def floor_app(db_path: str) -> Starlette:
    db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS registry (job TEXT, worker TEXT, report TEXT, PRIMARY KEY (job, worker))")
    db.execute("CREATE TABLE IF NOT EXISTS samples (job TEXT, worker TEXT, time TEXT, value REAL)")
    queue: list[tuple[list, asyncio.Future]] = []

    def write(group: list[tuple[list, asyncio.Future]]) -> None:
        messages = [m for batch, _ in group for m in batch]
        keys = {(m["labels"]["JOB_ID"], m["labels"]["WORKER_ID"]) for m in messages}
        db.execute("BEGIN IMMEDIATE")
        for key in keys:
            db.execute("SELECT report FROM registry WHERE job = ? AND worker = ?", key).fetchall()
        db.executemany("INSERT OR REPLACE INTO registry VALUES (?, ?, ?)", [(*key, "{}") for key in keys])
        db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)", [
            (m["labels"]["JOB_ID"], m["labels"]["WORKER_ID"], sample["timestamp"], sample["rate"])
            for m in messages for sample in m.get("workerMetrics", {}).get("cpuTime", ())])

    async def committer(wake: asyncio.Event) -> None:
        nonlocal queue
        while True:
            while not queue:
                await wake.wait()
                wake.clear()
            group, queue = queue, []
            write(group)  # on the loop, as Headrace does; only the commit's fsync goes to a thread
            await asyncio.to_thread(db.execute, "COMMIT")
            for _, future in group:
                future.set_result(None)

    class WorkerMessages:
        async def __call__(self, scope, receive, send) -> None:
            body, more = b"", True
            while more:
                message = await receive()
                body, more = body + message.get("body", b""), message.get("more_body", False)
            messages = orjson.loads(body)["workerMessages"]
            future = asyncio.get_running_loop().create_future()
            queue.append((messages, future))
            app.state.wake.set()
            await future
            out = orjson.dumps({"workerMessageResponses": [{} for _ in messages]})
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]})
            await send({"type": "http.response.body", "body": out})

    async def healthz(_request):
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        app.state.wake = asyncio.Event()
        task = asyncio.create_task(committer(app.state.wake))
        yield
        task.cancel()

    app = Starlette(routes=[Route("/healthz", healthz), Route("/v1b3/{path:path}", WorkerMessages())],
                    lifespan=lifespan)
    return app


def serve_floor(port: int, db_path: str) -> None:
    app = floor_app(db_path)
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)  # as `headrace serve` does
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_floor(data_dir: Path, fleet_from: Target) -> Target:
    data_dir.mkdir(parents=True)
    port, log = free_port(), data_dir / "floor.log"
    process = subprocess.Popen([sys.executable, "-m", "bench.floor", "--serve", str(port), str(data_dir / "floor.db")],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    wait_healthy(process, url, log)
    # The same workers' streams (the floor knows no jobs; the ids are only labels to it).
    return Target("floor", data_dir, Server(url, data_dir, process, log), Fleet(
        [Worker(w.labels["JOB_ID"], w.labels["WORKER_ID"], w.start) for w in fleet_from.fleet.workers]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_floor(int(args.serve[0]), args.serve[1])

    with tempfile.TemporaryDirectory(prefix="headrace-floor-") as tmp:
        targets: list[Target] = []
        try:
            targets.append(Target.start("headrace", Path(tmp) / "data", {}))
            targets.append(start_floor(Path(tmp) / "floor", targets[0]))
            results = _run(targets, args)
        finally:
            for target in targets:
                target.server.stop(signal.SIGKILL)
        _report(targets, results, args)


def _run(targets: list[Target], args) -> dict[str, dict[str, list[Phase]]]:
    results: dict[str, dict[str, list[Phase]]] = {t.name: {p: [] for p in PHASES} for t in targets}
    plans = [(t, psutil.Process(t.server.process.pid), int(t.server.url.rsplit(":", 1)[1]), t.phases())
             for t in targets]
    for _ in range(args.rounds):
        for name in PHASES:
            for target, process, port, phases in plans:
                results[target.name][name].append(run_phase(process, port, *phases[name], args.seconds,
                                                            args.connections))
    return results


def _report(targets: list[Target], results: dict[str, dict[str, list[Phase]]], args) -> None:
    print(f"{args.connections} connections, {args.rounds} rounds x {args.seconds:g} s per phase, taking turns; "
          f"{psutil.cpu_count()} cores, load average {psutil.getloadavg()[0]:.1f}")
    print(f"{'server':<10}{'phase':<9}{'req/s':>9}{'msg/s':>9}{'CPU ms/req':>12}")
    for target in targets:
        for phase, phases in results[target.name].items():
            rate = _rate(phases)
            cpu = statistics.median(p.cpu_per_request for p in phases) * 1e3
            print(f"{target.name:<10}{phase:<9}{rate:>9.0f}{rate * PER_REQUEST[phase]:>9.0f}{cpu:>12.3f}")
        ratio = _rate(results[target.name]["single"]) / _rate(results[target.name]["healthz"])
        print(f"{target.name}: single messages / healthz requests: {ratio:.2f}")
    targets[0].check_durable()
    stored = sqlite3.connect(targets[1].data_dir / "floor.db").execute("SELECT count(*) FROM samples").fetchone()[0]
    acked = targets[1].fleet.samples_acked // 2  # the floor stores CPU samples, not memory ones
    print(f"floor: durability after SIGKILL: {stored} of {acked} acknowledged CPU samples stored")
    if stored != acked:
        raise SystemExit("floor: LOST acknowledged writes")


if __name__ == "__main__":
    main()
