"""Snapshot rows: the Snapshot JSON plus what lookups, lists and the sweeper filter on.

Reads take `now` and skip snapshots past their expire time, so an expired snapshot is gone
the moment its ttl ends, whether or not the sweeper has deleted its row yet.
"""

from __future__ import annotations

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Connection

from headrace.store.schema import snapshots


def _columns(snap: dict) -> dict:
    return {"state": snap["state"], "body": orjson.dumps(snap).decode()}


def insert(conn: Connection, snap: dict, expire_time: str) -> None:
    conn.execute(snapshots.insert().values(
        id=snap["id"], project_id=snap["projectId"], location=snap["region"],
        source_job_id=snap["sourceJobId"], creation_time=snap["creationTime"],
        expire_time=expire_time, **_columns(snap)))


def save(conn: Connection, snap: dict) -> None:
    conn.execute(snapshots.update().where(snapshots.c.id == snap["id"]).values(**_columns(snap)))


def get(conn: Connection, snapshot_id: str, now: str) -> dict | None:
    body = conn.execute(select(snapshots.c.body).where(
        snapshots.c.id == snapshot_id, snapshots.c.expire_time > now)).scalar()
    return orjson.loads(body) if body is not None else None


def list_(conn: Connection, project_id: str, location: str, job_id: str | None, now: str) -> list[dict]:
    """Newest first."""
    where = [snapshots.c.project_id == project_id, snapshots.c.location == location,
             snapshots.c.expire_time > now]
    if job_id:
        where.append(snapshots.c.source_job_id == job_id)
    rows = conn.execute(select(snapshots.c.body).where(*where)
                        .order_by(snapshots.c.creation_time.desc(), snapshots.c.id))
    return [orjson.loads(body) for body in rows.scalars()]


def ids_in_states(conn: Connection, states: tuple[str, ...], now: str) -> list[str]:
    return list(conn.execute(select(snapshots.c.id).where(
        snapshots.c.state.in_(states), snapshots.c.expire_time > now)).scalars())


def delete(conn: Connection, snapshot_id: str) -> None:
    conn.execute(snapshots.delete().where(snapshots.c.id == snapshot_id))


def delete_expired(conn: Connection, now: str) -> None:
    conn.execute(snapshots.delete().where(snapshots.c.expire_time <= now))
