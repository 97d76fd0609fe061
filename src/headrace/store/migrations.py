"""Schema migrations, applied in order at start-up; `schema_version` records the last one.

Each migration is a function of a connection, run in one transaction with the version bump.
Add new ones at the end; never edit one that has shipped.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, select, text
from sqlalchemy.engine import Connection, Engine

from headrace.store import schema

# The PostgreSQL advisory lock migrations hold: keys (0x48454144 "HEAD", 1).
_PG_LOCK = text("SELECT pg_advisory_xact_lock(1212498244, 1)")

_version_meta = MetaData()
schema_version = Table("schema_version", _version_meta, Column("version", Integer, nullable=False))


def _v1_initial(conn: Connection) -> None:
    schema.metadata.create_all(conn)


MIGRATIONS = [_v1_initial]


def migrate(engine: Engine) -> int:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # API processes sharing the database start together: one migrates, the others wait
            # for its commit and then find nothing left to do. (SQLite's writer lock does this.)
            conn.execute(_PG_LOCK)
        _version_meta.create_all(conn)
        current = conn.execute(select(schema_version.c.version)).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(version=0))
            current = 0
        if current > len(MIGRATIONS):
            raise RuntimeError(f"The store has schema version {current}, newer than this Headrace knows "
                               f"({len(MIGRATIONS)}): it was written by a newer release; upgrade Headrace.")
        for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(conn)
            conn.execute(schema_version.update().values(version=number))
        return len(MIGRATIONS)
