"""Persistence: one SQLAlchemy Core engine, SQLite in the data dir by default.

SQLite runs in WAL mode with synchronous=FULL, so a write the API acknowledged survives
kill -9. Writers take one lock so concurrent requests queue here instead of spinning on
SQLITE_BUSY; readers run beside them on their own connections.

PostgreSQL (a `postgresql://` URL, driver psycopg 3) runs the same statements; its commits
are durable with its default synchronous_commit=on. Several API processes may share one
database: each write transaction first takes a transaction-scoped advisory lock, so writers
queue across processes as they do within one, and the services' read-then-write steps stay
safe under READ COMMITTED. docs/postgresql.md has the details.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from headrace.store.migrations import migrate

# The writers' lock across processes, released by PostgreSQL when the transaction ends.
# Advisory lock keys (0x48454144 "HEAD", n): 1 for migrations, 2 for writes.
_PG_WRITE_LOCK = text("SELECT pg_advisory_xact_lock(1212498244, 2)")


class Store:
    def __init__(self, url: str):
        url = make_url(url)
        if url.drivername == "postgresql":  # SQLAlchemy's default would be psycopg2
            url = url.set(drivername="postgresql+psycopg")
        self.url = url.render_as_string(hide_password=False)
        try:
            # Pre-ping: a pooled connection that a database restart closed is replaced, not failed on.
            self.engine: Engine = create_engine(url, pool_size=16, max_overflow=32,
                                                pool_pre_ping=url.get_backend_name() != "sqlite")
        except ModuleNotFoundError as error:
            raise RuntimeError(f"The database URL needs the driver module {error.name!r}; for PostgreSQL, "
                               "install Headrace with its postgres extra: pip install 'headrace[postgres]'.") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._write_lock = threading.Lock()
        self._shared_lock = _PG_WRITE_LOCK if self.engine.dialect.name == "postgresql" else None
        try:
            migrate(self.engine)
        except OperationalError as error:  # unreachable, refused, no such database...
            self.engine.dispose()
            raise RuntimeError(f"Could not open the store at {url.render_as_string(hide_password=True)}: "
                               f"{str(error.orig).strip()}") from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction: everything in the block commits together or not at all."""
        with self._write_lock, self.engine.begin() as conn:
            if self._shared_lock is not None:
                conn.execute(self._shared_lock)
            yield conn

    def begin_if_free(self) -> OpenWrite | None:
        """A write transaction begun without waiting, for a caller that must not block for
        long (the event loop); None where beginning could wait: on PostgreSQL (a network
        round trip, another process's lock) or while another thread writes. The caller ends
        it with `commit` or `rollback`, from any thread."""
        if self._shared_lock is not None or not self._write_lock.acquire(blocking=False):
            return None
        conn = None
        try:
            conn = self.engine.connect()
            return OpenWrite(conn, conn.begin(), self._write_lock)
        except BaseException:
            if conn is not None:
                conn.close()
            self._write_lock.release()
            raise

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


class OpenWrite:
    """A transaction from `Store.begin_if_free`; ending it frees the store for other writers."""

    def __init__(self, conn: Connection, transaction, lock: threading.Lock):
        self.conn, self._transaction, self._lock = conn, transaction, lock

    def commit(self) -> None:
        try:
            self._transaction.commit()
        finally:
            self._end()

    def rollback(self) -> None:
        try:
            self._transaction.rollback()
        finally:
            self._end()

    def _end(self) -> None:
        try:
            self.conn.close()
        finally:
            self._lock.release()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
