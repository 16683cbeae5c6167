"""Incremental pulls from a shop's own database (any SQLAlchemy database).

A source is an Airflow connection, a query and a watermark column (default
`updated_at`). Each pull reads

    SELECT * FROM (<query>) AS src WHERE src.<watermark> >= :since ORDER BY src.<watermark>

in chunks (the first pull has no WHERE), imports the rows through the same checks and
upserts as a file, and stores the largest watermark seen. `>=`, not `>`: rows written
later with the same timestamp as the last one seen are not skipped; reading the
boundary rows again is harmless (they come back unchanged).
The watermark only moves after the pull is `done`, so a failed or killed pull is
repeated from the same point.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, select, text

from automail.db import session_scope, url_from_connection
from automail.imports.mapping import KINDS, load_mapping
from automail.imports.run import ImportResult, import_frames
from automail.models import ImportSqlSource, Shop

PULL_CHUNK = 50_000
log = logging.getLogger(__name__)


def source_engine(conn_id: str) -> Engine:
    """The SQLAlchemy engine for an Airflow connection: `sqlalchemy_url` in its extra,
    postgres/sqlite connections directly, otherwise the provider hook's engine."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return create_engine(extra["sqlalchemy_url"])
    if conn.conn_type in ("postgres", "postgresql", "sqlite"):
        url = url_from_connection(
            conn.conn_type, conn.host, conn.login, conn.password, conn.port, conn.schema
        )
        return create_engine(url)
    return conn.get_hook().get_sqlalchemy_engine()


def add_source(
    engine: Engine,
    shop_code: str,
    kind: str,
    conn_id: str,
    query: str,
    watermark_column: str = "updated_at",
    mapping: str | None = None,
) -> int:
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    load_mapping(mapping, kind)  # refuse a bad mapping now, not at the first pull
    with session_scope(engine) as session:
        shop = session.scalar(select(Shop).where(Shop.code == shop_code))
        if shop is None:
            raise LookupError(f"shop: no shop with code {shop_code!r}")
        src = session.scalar(
            select(ImportSqlSource).where(
                ImportSqlSource.shop_id == shop.id,
                ImportSqlSource.kind == kind,
                ImportSqlSource.conn_id == conn_id,
            )
        )
        if src is None:
            src = ImportSqlSource(shop_id=shop.id, kind=kind, conn_id=conn_id, enabled=True)
            session.add(src)
        src.query, src.watermark_column, src.mapping = query, watermark_column, mapping
        session.flush()
        return src.id


def _text(value: Any) -> str:
    """A database value as the text a CSV would have held (ISO 8601 for times)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_param(watermark: str | None) -> Any:
    if watermark is None:
        return None
    try:
        return datetime.fromisoformat(watermark)
    except ValueError:
        return watermark


def pull(engine: Engine, source_id: int, src_engine: Engine | None = None) -> ImportResult:
    """One incremental pull of a SQL source into the store."""
    with session_scope(engine) as session:
        src = session.get(ImportSqlSource, source_id)
        if src is None:
            raise LookupError(f"sql source: no source {source_id}")
        shop_code = session.get_one(Shop, src.shop_id).code
    mapping = load_mapping(src.mapping, src.kind)
    own = src_engine is None
    src_engine = src_engine or source_engine(src.conn_id)
    quote = src_engine.dialect.identifier_preparer.quote
    wm = quote(src.watermark_column)
    sql = f"SELECT * FROM ({src.query}) src"
    params: dict[str, Any] = {}
    if src.watermark is not None:
        sql += f" WHERE src.{wm} >= :since"
        params["since"] = _as_param(src.watermark)
    sql += f" ORDER BY src.{wm}"
    high: list[Any] = []
    label = f"sql:{src.conn_id} ({shop_code}/{src.kind}, {src.watermark_column} >= {src.watermark})"

    def frames() -> Iterator[pd.DataFrame]:
        with src_engine.connect() as conn:
            for frame in pd.read_sql(text(sql), conn, params=params, chunksize=PULL_CHUNK):
                if src.watermark_column not in frame.columns:
                    raise LookupError(
                        f"sql source {source_id}: watermark column {src.watermark_column!r} "
                        f"not in the query's columns ({', '.join(frame.columns)})"
                    )
                top = frame[src.watermark_column].max()
                if not pd.isna(top):
                    high.append(top)
                yield frame.astype(object).map(_text)

    try:
        result = import_frames(engine, label, mapping, src.shop_id, frames())
    finally:
        if own:
            src_engine.dispose()
    with session_scope(engine) as session:
        row = session.get_one(ImportSqlSource, source_id)
        row.last_pulled_at = datetime.now(UTC)
        if result.status == "done" and high:
            top = max(high)
            row.watermark = top.isoformat() if hasattr(top, "isoformat") else str(top)
    return result


def pull_all(engine: Engine) -> list[ImportResult]:
    with session_scope(engine) as session:
        ids = list(
            session.scalars(
                select(ImportSqlSource.id)
                .where(ImportSqlSource.enabled.is_(True))
                .order_by(ImportSqlSource.id)
            )
        )
    results = []
    for source_id in ids:
        try:
            results.append(pull(engine, source_id))
        except Exception as exc:  # one unreachable shop DB must not stop the others
            log.exception("sql source %s failed", source_id)
            error = f"sql source #{source_id}: {type(exc).__name__}: {exc}"
            results.append(ImportResult(f"sql source #{source_id}", "?", "failed", error=error))
    return results
