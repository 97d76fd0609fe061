"""Job messages and autoscaling events, kept in time order per job."""

from __future__ import annotations

import orjson
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from headrace.store.bulk import Bulk
from headrace.store.schema import autoscaling_events, job_messages

# Importance is compared by rank, not by enum number (JOB_MESSAGE_BASIC is 5 on the wire).
RANK = {"JOB_MESSAGE_IMPORTANCE_UNKNOWN": 0, "JOB_MESSAGE_DEBUG": 1, "JOB_MESSAGE_DETAILED": 2,
        "JOB_MESSAGE_BASIC": 3, "JOB_MESSAGE_WARNING": 4, "JOB_MESSAGE_ERROR": 5}

_insert = Bulk(job_messages.insert(), ["job_id", "time", "rank", "body"])


def insert_many(conn: Connection, job_id: str, messages: list[dict]) -> None:
    """Each message is a JobMessage dict with `time`, `messageImportance` and `messageText`.

    Its id is the row's sequence number, added when it is read.
    """
    _insert.run(conn, [(job_id, m["time"], RANK[m["messageImportance"]], orjson.dumps(m).decode())
                       for m in messages])


def insert_event(conn: Connection, job_id: str, event: dict) -> None:
    conn.execute(autoscaling_events.insert().values(
        job_id=job_id, time=event["time"], body=orjson.dumps(event).decode()))


def _window(table, job_id: str, start: str | None, end: str | None, after: tuple[str, int] | None):
    where = [table.c.job_id == job_id]
    if start:
        where.append(table.c.time >= start)
    if end:
        where.append(table.c.time < end)
    if after:
        time, seq = after
        # `time >= t` alone lets the index seek to the page; the OR picks up after the last row.
        where += [table.c.time >= time, or_(table.c.time > time, and_(table.c.time == time, table.c.seq > seq))]
    return where


def page(conn: Connection, job_id: str, *, min_rank: int, start: str | None, end: str | None,
         after: tuple[str, int] | None, limit: int) -> list[tuple[str, int, dict]]:
    """Ascending time; keyset pagination on (time, seq)."""
    where = _window(job_messages, job_id, start, end, after)
    if min_rank:
        where.append(job_messages.c.rank >= min_rank)
    rows = conn.execute(select(job_messages.c.time, job_messages.c.seq, job_messages.c.body)
                        .where(and_(*where))
                        .order_by(job_messages.c.time, job_messages.c.seq).limit(limit))
    return [(t, s, orjson.loads(b) | {"id": str(s)}) for t, s, b in rows]


def events(conn: Connection, job_id: str, *, start: str | None, end: str | None,
           after: tuple[str, int] | None, limit: int) -> list[tuple[str, int, dict]]:
    rows = conn.execute(select(autoscaling_events.c.time, autoscaling_events.c.seq, autoscaling_events.c.body)
                        .where(and_(*_window(autoscaling_events, job_id, start, end, after)))
                        .order_by(autoscaling_events.c.time, autoscaling_events.c.seq).limit(limit))
    return [(t, s, orjson.loads(b)) for t, s, b in rows]
