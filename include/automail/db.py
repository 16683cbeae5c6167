"""Reaching the mail store: URL resolution, engines and sessions.

The store is its own database, separate from Airflow's metadata DB (F2). Its URL
comes from, in order: `AUTOMAIL_DB_URL` (tests, benchmarks), the Airflow connection
`automail_db`, or the embedded default, a SQLite file under `$AUTOMAIL_HOME/var`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

CONN_ID = "automail_db"
log = logging.getLogger(__name__)


def project_home() -> Path:
    """The project checkout (holds var/); override with AUTOMAIL_HOME."""
    env = os.environ.get("AUTOMAIL_HOME")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def default_sqlite_url() -> str:
    return f"sqlite:///{project_home() / 'var' / 'automail.db'}"


def url_from_connection(
    conn_type: str,
    host: str | None,
    login: str | None,
    password: str | None,
    port: int | None,
    schema: str | None,
) -> str:
    """Turn Airflow connection fields into a SQLAlchemy URL (psycopg2 for PostgreSQL)."""
    if conn_type == "sqlite":
        if not host:
            raise ValueError(f"connection {CONN_ID!r}: conn_type sqlite needs host=<file path>")
        return f"sqlite:///{host}"
    if conn_type in ("postgres", "postgresql"):
        auth = quote(login or "", safe="")
        if password:
            auth += ":" + quote(password, safe="")
        netloc = f"{auth}@" if auth else ""
        netloc += host or "localhost"
        if port:
            netloc += f":{port}"
        return f"postgresql+psycopg2://{netloc}/{schema or ''}"
    raise ValueError(f"connection {CONN_ID!r}: conn_type {conn_type!r} is not sqlite or postgres")


def _airflow_connection_url() -> str | None:
    """The `automail_db` Airflow connection, if Airflow knows one (env, secrets, metadata DB)."""
    if "AIRFLOW_CONN_AUTOMAIL_DB" not in os.environ and "AIRFLOW_HOME" not in os.environ:
        return None
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(CONN_ID)
    except Exception as exc:  # no Airflow, no such connection: fall back to the default
        log.debug("no %s connection (%s); using the embedded default", CONN_ID, exc)
        return None
    return url_from_connection(
        conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema
    )


def resolve_url() -> str:
    return os.environ.get("AUTOMAIL_DB_URL") or _airflow_connection_url() or default_sqlite_url()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 (DB-API objects)
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn) -> None:  # noqa: ANN001
    conn.exec_driver_sql("BEGIN")


def take_write_lock(session: Session) -> None:
    """Serialise writers on SQLite, SQLite's single-writer stand-in for FOR UPDATE.

    A write statement as the first statement of the transaction takes the RESERVED
    lock (waiting up to busy_timeout), so no snapshot can go stale under us.
    No-op on PostgreSQL, where row locks do the job.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE settings SET key = key WHERE 1 = 0"))


def make_engine(url: str | None = None, **kwargs) -> Engine:  # noqa: ANN003
    url = url or resolve_url()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@cache
def _default_engine(url: str) -> Engine:
    return make_engine(url)


def get_engine(url: str | None = None) -> Engine:
    return _default_engine(url or resolve_url())


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(engine or get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
