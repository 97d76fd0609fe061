"""Jobs rows: the full Job JSON plus the columns that lists filter and sort on."""

from __future__ import annotations

import orjson
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from headrace.store.schema import jobs

TERMINAL = frozenset({"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                      "JOB_STATE_UPDATED", "JOB_STATE_DRAINED"})


def _columns(job: dict) -> dict:
    state = job["currentState"]
    return {
        "id": job["id"],
        "project_id": job["projectId"],
        "location": job["location"],
        "name": job["name"],
        "client_request_id": job.get("clientRequestId"),
        "current_state": state,
        "terminal": state in TERMINAL,
        "streaming": job.get("type") == "JOB_TYPE_STREAMING",
        "create_time": job["createTime"],
        "terminate_time": job["currentStateTime"] if state in TERMINAL else None,
        "body": orjson.dumps(job).decode(),
    }


def insert(conn: Connection, job: dict) -> None:
    conn.execute(jobs.insert().values(**_columns(job)))


def save(conn: Connection, job: dict) -> None:
    conn.execute(jobs.update().where(jobs.c.id == job["id"]).values(**_columns(job)))


def get(conn: Connection, job_id: str) -> dict | None:
    body = conn.execute(select(jobs.c.body).where(jobs.c.id == job_id)).scalar()
    return orjson.loads(body) if body is not None else None


def active_named(conn: Connection, project_id: str, location: str, name: str) -> dict | None:
    body = conn.execute(select(jobs.c.body).where(
        jobs.c.project_id == project_id, jobs.c.location == location,
        jobs.c.name == name, jobs.c.terminal.is_(False))).scalar()
    return orjson.loads(body) if body is not None else None


def ids_in_states(conn: Connection, states: list[str]) -> list[str]:
    return list(conn.execute(select(jobs.c.id).where(jobs.c.current_state.in_(states))).scalars())


def page(conn: Connection, *, project_id: str, location: str | None, terminal: bool | None,
         name: str | None, created: tuple[str | None, str | None], terminated: tuple[str | None, str | None],
         before_seq: int | None, limit: int) -> list[tuple[int, dict]]:
    """Newest first; keyset pagination on `seq` keeps every page O(page)."""
    where = [jobs.c.project_id == project_id]
    if location is not None:
        where.append(jobs.c.location == location)
    if terminal is not None:
        where.append(jobs.c.terminal.is_(terminal))
    if name:
        where.append(jobs.c.name == name)
    if before_seq is not None:
        where.append(jobs.c.seq < before_seq)
    for column, (start, end) in ((jobs.c.create_time, created), (jobs.c.terminate_time, terminated)):
        if start:
            where.append(column >= start)
        if end:
            where.append(column < end)
    rows = conn.execute(select(jobs.c.seq, jobs.c.body).where(and_(*where))
                        .order_by(jobs.c.seq.desc()).limit(limit))
    return [(seq, orjson.loads(body)) for seq, body in rows]
