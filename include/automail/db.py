"""Reaching the mail store: URL resolution, engines and sessions.

The store is its own database, separate from Airflow's metadata DB (F2). Its URL
comes from, in order: `AUTOMAIL_DB_URL` (tests, benchmarks), the Airflow connection
`automail_db`, or the embedded default, a SQLite file under `$AUTOMAIL_HOME/var`.
The default applies only when no connection is configured at all: a connection that is
set but unreadable (truncated JSON, unknown type) is an error naming it, never a quiet
switch to a local file. Likewise only the default's `var/` folder is ever created.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

CONN_ID = "automail_db"
ENV_VAR = "AIRFLOW_CONN_AUTOMAIL_DB"
log = logging.getLogger(__name__)


class StoreConnectionError(RuntimeError):
    """The `automail_db` connection is configured but cannot be used."""


class StoreNotMigrated(RuntimeError):
    """The store lacks a table the code needs: its schema was never created or is old."""


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
        path = host or schema  # JSON form: host; URI form sqlite:////abs/path: schema
        if not path:
            raise ValueError(f"connection {CONN_ID!r}: conn_type sqlite needs host=<file path>")
        return f"sqlite:///{path}"
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
    """The `automail_db` Airflow connection, or None when none is configured anywhere."""
    if ENV_VAR not in os.environ and "AIRFLOW_HOME" not in os.environ:
        return None
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # no Airflow: nothing can be configured
        return None
    try:
        conn = BaseHook.get_connection(CONN_ID)
    except AirflowNotFoundException as exc:
        # Airflow also reports an env var it cannot parse as "not defined": if the
        # variable is set, the operator meant it, so say so instead of falling back.
        if ENV_VAR in os.environ:
            raise StoreConnectionError(
                f"connection {CONN_ID!r}: {ENV_VAR} is set but cannot be read ({exc}); "
                "fix it (JSON or URI form) or unset it to use the embedded SQLite store"
            ) from exc
        log.debug("no %s connection (%s); using the embedded default", CONN_ID, exc)
        return None
    except Exception as exc:
        raise StoreConnectionError(f"connection {CONN_ID!r}: cannot be read: {exc}") from exc
    try:
        return url_from_connection(
            conn.conn_type or "", conn.host, conn.login, conn.password, conn.port, conn.schema
        )
    except ValueError as exc:
        raise StoreConnectionError(str(exc)) from exc


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
            _sqlite_folder(url, Path(parsed.database))
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
    event.listen(engine, "handle_error", _missing_table)
    return engine


def _sqlite_folder(url: str, path: Path) -> None:
    """Create the embedded default's var/ folder; any other path's folder must exist, so a
    mistyped path fails instead of quietly starting an empty store somewhere new."""
    if path.parent.is_dir():
        return
    if url == default_sqlite_url():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    raise StoreConnectionError(
        f"store URL {url!r}: folder {str(path.parent)!r} does not exist "
        "(check the path, or create the folder first)"
    )


# sqlite3: "no such table: mails"; PostgreSQL: SQLSTATE 42P01 undefined_table.
_NO_TABLE = re.compile(r"no such table: (\w+)|relation \"(\w+)\" does not exist")


def _missing_table(ctx: ExceptionContext) -> None:
    exc = ctx.original_exception
    code = getattr(exc, "pgcode", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
    match = _NO_TABLE.search(str(exc))
    if match is None or (code is not None and code != "42P01"):
        return
    url = ctx.engine.url.render_as_string(hide_password=True) if ctx.engine else "?"
    table = match.group(1) or match.group(2)
    raise StoreNotMigrated(
        f"the mail store {url} has no table {table!r}: its schema is missing or older than "
        "this code; run `automail db upgrade`"
    ) from ctx.sqlalchemy_exception


@cache
def _default_engine(url: str) -> Engine:
    return make_engine(url)


def get_engine(url: str | None = None) -> Engine:
    return _default_engine(url or resolve_url())


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(engine or get_engine(), expire_on_commit=False)


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE/DELETE matched. Session.execute is typed as returning a plain
    Result; for DML it is the driver's CursorResult, which has the count."""
    return cast("CursorResult[Any]", result).rowcount


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
