"""Insert mail rows, skipping those whose idempotency key already exists.

PostgreSQL: COPY straight into `mails` under a savepoint; if a key exists after all
(a concurrent run), COPY into a session-local staging table and one
`INSERT … SELECT … ON CONFLICT DO NOTHING`. COPY costs the client a few µs a row
where a multi-row INSERT costs tens (bind processing and literal quoting).
SQLite: `INSERT OR IGNORE` with executemany, which is already cheap there.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg2.errors
from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from automail.models import Mail

# The columns creation fills, in COPY order.
COLUMNS: tuple[str, ...] = (
    "shop_id", "kind", "source_key", "mode", "status", "customer_id", "order_id",
    "shipment_id", "template_id", "device", "to_address", "from_address", "from_name",
    "reply_to", "bcc", "return_path", "subject", "body_text", "body_html", "due_at",
    "rendered_at", "created_at", "updated_at", "created_by", "attempt_count", "last_error",
)  # fmt: skip
_COLS_SQL = ", ".join(COLUMNS)


def _copy_field(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        # COPY text format escapes; chained replace beats str.translate on non-ASCII text.
        return (
            value.replace("\\", "\\\\")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _copy_pg(session: Session, rows: Sequence[tuple]) -> int:
    buf = io.StringIO()
    buf.writelines("\t".join(map(_copy_field, row)) + "\n" for row in rows)
    buf.seek(0)
    conn = session.connection()
    raw: Any = conn.connection.dbapi_connection  # psycopg2: cursors are context managers
    # The caller left out the keys that had their mail a moment ago, so COPY straight
    # into `mails` nearly always succeeds; only a concurrent run creating the same
    # keys makes it fail, and then the savepoint undoes it and the staging path skips
    # the duplicates. (Staging every chunk cost ~15 µs of server time per mail.)
    with raw.cursor() as cur:
        cur.execute("SAVEPOINT automail_copy")
        try:
            cur.copy_expert(f"COPY mails ({_COLS_SQL}) FROM STDIN", buf)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT automail_copy")
        else:
            cur.execute("RELEASE SAVEPOINT automail_copy")
            return len(rows)
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS mail_stage ON COMMIT DELETE ROWS AS "
        f"SELECT {_COLS_SQL} FROM mails WITH NO DATA"
    )
    buf.seek(0)
    with raw.cursor() as cur:
        cur.copy_expert(f"COPY mail_stage ({_COLS_SQL}) FROM STDIN", buf)
    result = conn.execute(
        text(
            f"INSERT INTO mails ({_COLS_SQL}) SELECT {_COLS_SQL} FROM mail_stage "
            "ON CONFLICT ON CONSTRAINT uq_mails_source DO NOTHING"
        )
    )
    conn.exec_driver_sql("TRUNCATE mail_stage")
    return result.rowcount


def _insert_sqlite(session: Session, rows: Sequence[tuple]) -> int:
    stmt = sqlite.insert(Mail.__table__).on_conflict_do_nothing()
    before = session.connection().exec_driver_sql("SELECT total_changes()").scalar_one()
    session.connection().execute(stmt, [dict(zip(COLUMNS, row, strict=True)) for row in rows])
    after = session.connection().exec_driver_sql("SELECT total_changes()").scalar_one()
    return after - before


def insert_ignoring_duplicates(session: Session, rows: Sequence[tuple]) -> int:
    """Insert rows (tuples in COLUMNS order); returns how many were new."""
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _copy_pg(session, rows)
    return _insert_sqlite(session, rows)
