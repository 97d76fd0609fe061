"""Debug captures: what workers send through jobs.debug.sendCapture, newest kept per worker."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from headrace.store.schema import debug_captures


def insert(conn: Connection, job_id: str, worker_id: str, component_id: str, time: str,
           data_format: str, data: str, keep: int) -> None:
    """Store one capture and drop the worker's captures older than its `keep` newest."""
    conn.execute(debug_captures.insert().values(
        job_id=job_id, worker_id=worker_id, component_id=component_id, time=time,
        data_format=data_format, data=data))
    oldest_kept = conn.execute(
        select(debug_captures.c.seq)
        .where(debug_captures.c.job_id == job_id, debug_captures.c.worker_id == worker_id)
        .order_by(debug_captures.c.seq.desc()).offset(keep - 1).limit(1)).scalar()
    if oldest_kept is not None:
        conn.execute(delete(debug_captures).where(
            debug_captures.c.job_id == job_id, debug_captures.c.worker_id == worker_id,
            debug_captures.c.seq < oldest_kept))


def latest(conn: Connection, job_id: str, worker_id: str, end: str | None,
           limit: int) -> list[tuple[str, str, str, str]]:
    """The worker's newest captures at or before `end`, newest first:
    (component_id, time, data_format, data)."""
    where = [debug_captures.c.job_id == job_id, debug_captures.c.worker_id == worker_id]
    if end:
        where.append(debug_captures.c.time <= end)
    rows = conn.execute(select(debug_captures.c.component_id, debug_captures.c.time,
                               debug_captures.c.data_format, debug_captures.c.data)
                        .where(*where).order_by(debug_captures.c.seq.desc()).limit(limit))
    return [tuple(r) for r in rows]
