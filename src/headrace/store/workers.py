"""The worker registry: one row per worker of a job, fed by WorkerMessages, and the CPU and
memory samples of each worker.

A row's body is the worker's registry view (see docs/workers.md); `state`, `last_seen` and
`report_interval` are copied out of it so the sweeper finds silent workers with an index
range scan instead of reading bodies. Other code reads the registry through `get`,
`list_for_job` and `samples`.
"""

from __future__ import annotations

import orjson
from sqlalchemy import and_, bindparam, select
from sqlalchemy.engine import Connection

from headrace.store.bulk import Bulk
from headrace.store.schema import jobs, worker_samples, workers

# States in which a worker is expected to keep reporting.
ALIVE = ("HEALTHY", "UNHEALTHY")

# The ingestion path's statements, built once: building a statement costs more than running it.
_COLUMNS = ["state", "last_seen", "report_interval", "body"]
_update = Bulk(workers.update()
               .where(workers.c.job_id == bindparam("k_job"), workers.c.worker_id == bindparam("k_worker"))
               .values(**{c: bindparam(c) for c in _COLUMNS}), [*_COLUMNS, "k_job", "k_worker"])
_insert = Bulk(workers.insert(), ["job_id", "worker_id", *_COLUMNS])
_insert_samples = Bulk(worker_samples.insert(), ["job_id", "worker_id", "time", "body"])
_place = select(jobs.c.project_id, jobs.c.location).where(jobs.c.id == bindparam("job_id"))
_load = select(workers.c.job_id, workers.c.worker_id, workers.c.body).where(
    workers.c.job_id.in_(bindparam("job_ids", expanding=True)),
    workers.c.worker_id.in_(bindparam("worker_ids", expanding=True)))


def _columns(worker: dict) -> tuple:
    return worker["state"], worker["lastSeen"], worker.get("livenessInterval"), orjson.dumps(worker).decode()


def job_place(conn: Connection, job_id: str) -> tuple[str, str] | None:
    """(project, location) of a job, without reading its (possibly large) body."""
    row = conn.execute(_place, {"job_id": job_id}).first()
    return (row[0], row[1]) if row else None


def get(conn: Connection, job_id: str, worker_id: str) -> dict | None:
    body = conn.execute(select(workers.c.body).where(
        workers.c.job_id == job_id, workers.c.worker_id == worker_id)).scalar()
    return orjson.loads(body) if body is not None else None


def load(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """The registry rows that exist among these (job id, worker id) keys."""
    # Job ids IN and worker ids IN: SQLite searches the primary key for each pair (a row-value
    # IN would scan the table); pairs not asked for are dropped before their bodies are read.
    wanted = set(keys)
    rows = conn.execute(_load, {"job_ids": list({k[0] for k in wanted}),
                                "worker_ids": list({k[1] for k in wanted})})
    return {(job_id, worker_id): orjson.loads(body) for job_id, worker_id, body in rows
            if (job_id, worker_id) in wanted}


def list_for_job(conn: Connection, job_id: str) -> list[dict]:
    """Every worker that ever reported for the job, by worker id."""
    rows = conn.execute(select(workers.c.body).where(workers.c.job_id == job_id)
                        .order_by(workers.c.worker_id))
    return [orjson.loads(b) for b in rows.scalars()]


def insert_many(conn: Connection, new: list[dict]) -> None:
    _insert.run(conn, [(w["jobId"], w["workerId"], *_columns(w)) for w in new])


def save_many(conn: Connection, changed: list[dict]) -> None:
    _update.run(conn, [(*_columns(w), w["jobId"], w["workerId"]) for w in changed])


def silent(conn: Connection, before: str) -> list[tuple[str, str, str, str, bool]]:
    """Alive workers that keep a report interval and were last seen before `before`:
    (job_id, worker_id, last_seen, report_interval, job is terminal)."""
    rows = conn.execute(
        select(workers.c.job_id, workers.c.worker_id, workers.c.last_seen, workers.c.report_interval,
               jobs.c.terminal)
        .select_from(workers.join(jobs, jobs.c.id == workers.c.job_id))
        .where(workers.c.state.in_(ALIVE), workers.c.last_seen < before,
               workers.c.report_interval.is_not(None)))
    return [tuple(r) for r in rows]


def add_samples(conn: Connection, rows: list[tuple[str, str, str, str]]) -> None:
    """Rows of (job_id, worker_id, time, body) where body is one sample as JSON (see `samples`)."""
    _insert_samples.run(conn, rows)


def samples(conn: Connection, job_id: str, worker_id: str, start: str | None = None,
            limit: int = 1000) -> list[dict]:
    """A worker's samples in time order, each {"time", "cpu"|"memory"|"gpu": the reported
    CPUTime, MemInfo or GPUUsage, "container": name when it is one container's}."""
    where = [worker_samples.c.job_id == job_id, worker_samples.c.worker_id == worker_id]
    if start:
        where.append(worker_samples.c.time >= start)
    rows = conn.execute(select(worker_samples.c.time, worker_samples.c.body).where(and_(*where))
                        .order_by(worker_samples.c.time, worker_samples.c.seq).limit(limit))
    return [orjson.loads(b) | {"time": t} for t, b in rows]
