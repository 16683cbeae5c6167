"""A shop's SQL source on a second, real PostgreSQL database, pulled incrementally."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import PG_URL, _ensure_pg_database, _pg_available
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from automail.imports.sql_source import add_source, pull
from automail.models import ImportSqlSource, Order
from automail.sample_data import make_shop

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


@pytest.fixture
def shop_db(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The shop's own order database (a second PostgreSQL database) and its connection."""
    if why := _pg_available():
        pytest.skip(why)
    url = make_url(PG_URL).set(database=f"{make_url(PG_URL).database}_src")
    _ensure_pg_database(url.render_as_string(hide_password=False))
    src = create_engine(url)
    with src.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS shop_orders"))
        conn.execute(
            text("""CREATE TABLE shop_orders (
                order_no text PRIMARY KEY, ordered timestamptz NOT NULL, mail text,
                buyer text, amount integer, updated_at timestamptz NOT NULL)""")
        )
    conn_json = {
        "conn_type": "postgres",
        "host": url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,
    }
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_ORDERS_DB", json.dumps(conn_json))
    yield src
    src.dispose()


def _put(src, rows: list[tuple]) -> None:  # noqa: ANN001
    with src.begin() as conn:
        conn.execute(
            text("""INSERT INTO shop_orders VALUES (:n, :o, :m, :b, :a, :u)
                ON CONFLICT (order_no) DO UPDATE SET mail = excluded.mail,
                amount = excluded.amount, updated_at = excluded.updated_at"""),
            [dict(zip("nombau", r, strict=True)) for r in rows],
        )


MAPPING = """kind = "orders"
date_formats = ["ISO8601"]
[columns]
order_no = "order_number"
ordered = "ordered_at"
mail = "customer_email"
buyer = "customer_name"
amount = "total"
"""


def test_incremental_pull_by_watermark(engine, session, shop_db, tmp_path):
    make_shop(session, "tea")
    session.commit()
    mapping = tmp_path / "shop_db.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    _put(shop_db, [("S-bad", T0, "", "客", 1, T0)])  # no email: refused, kept
    minute = timedelta(minutes=1)
    _put(
        shop_db,
        [(f"S-{i}", T0, f"s{i}@example.jp", "客", 100 + i, T0 + i * minute) for i in range(5)],
    )
    source = add_source(
        engine, "tea", "orders", "shop_orders_db",
        "SELECT order_no, ordered, mail, buyer, amount, updated_at FROM shop_orders",
        mapping=str(mapping),
    )  # fmt: skip
    first = pull(engine, source)
    assert (first.status, first.read, first.inserted, first.rejected) == ("done", 6, 5, 1)
    session.commit()
    assert session.scalar(select(ImportSqlSource.watermark)) == (T0 + 4 * minute).isoformat()

    # One row changes later, one is new: only they and the boundary row (>=) are read.
    t1 = T0 + timedelta(hours=1)
    _put(
        shop_db,
        [("S-1", T0, "s1@example.jp", "客", 999, t1), ("S-9", t1, "s9@example.jp", "客", 9, t1)],
    )
    second = pull(engine, source)
    assert (second.read, second.inserted, second.updated, second.unchanged) == (3, 1, 1, 1)
    session.commit()
    assert session.scalar(select(Order.total).where(Order.order_number == "S-1")) == 999
    assert session.scalar(select(func.count()).select_from(Order)) == 6
    assert session.scalar(select(ImportSqlSource.watermark)) == t1.isoformat()
    third = pull(engine, source)  # nothing new: the boundary rows come back unchanged
    assert (third.read, third.inserted, third.updated, third.unchanged) == (2, 0, 0, 2)


def test_an_unreachable_source_fails_alone(engine, session, monkeypatch) -> None:
    from automail.imports.sql_source import pull_all

    make_shop(session, "tea")
    session.commit()
    monkeypatch.setenv(
        "AIRFLOW_CONN_SHOP_DOWN",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 9, "schema": "x"}),
    )
    add_source(engine, "tea", "orders", "shop_down", "SELECT 1 AS updated_at")
    [result] = pull_all(engine)
    assert result.status == "failed" and "OperationalError" in result.error
    session.commit()
    assert session.scalar(select(ImportSqlSource.watermark)) is None
