"""Metric rows: one per (job, structured name), holding the metric's current aggregate."""

from __future__ import annotations

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Connection

from headrace.store.schema import metrics


def get_many(conn: Connection, job_id: str, keys: list[str]) -> dict[str, dict]:
    rows = conn.execute(select(metrics.c.key, metrics.c.body).where(
        metrics.c.job_id == job_id, metrics.c.key.in_(keys)))
    return {key: orjson.loads(body) for key, body in rows}


def save(conn: Connection, job_id: str, key: str, update_time: str, body: dict, exists: bool) -> None:
    values = {"update_time": update_time, "body": orjson.dumps(body).decode()}
    if exists:
        conn.execute(metrics.update().where(metrics.c.job_id == job_id, metrics.c.key == key)
                     .values(**values))
    else:
        conn.execute(metrics.insert().values(job_id=job_id, key=key, **values))


def list_(conn: Connection, job_id: str, since: str | None) -> list[dict]:
    """The job's metrics in name order; with `since`, only those updated at or after it."""
    where = [metrics.c.job_id == job_id]
    if since:
        where.append(metrics.c.update_time >= since)
    rows = conn.execute(select(metrics.c.body).where(*where).order_by(metrics.c.key))
    return [orjson.loads(body) for body in rows.scalars()]
