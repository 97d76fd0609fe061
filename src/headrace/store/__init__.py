"""Persistence: one SQLAlchemy Core engine, SQLite in the data dir by default.

SQLite runs in WAL mode with synchronous=FULL, so a write the API acknowledged survives
kill -9. Writers take one lock so concurrent requests queue here instead of spinning on
SQLITE_BUSY; readers run beside them on their own connections.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine

from headrace.store.migrations import migrate


class Store:
    def __init__(self, url: str):
        self.url = url
        self.engine: Engine = create_engine(url, pool_size=16, max_overflow=32)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._write_lock = threading.Lock()
        migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction: everything in the block commits together or not at all."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
