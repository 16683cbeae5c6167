"""Writing checked rows: a staging table per import, then set-based upserts.

Each chunk goes into a temporary staging table (PostgreSQL: COPY; SQLite: one
executemany) and from there into the store with INSERT … SELECT … ON CONFLICT DO
UPDATE … WHERE <any column IS DISTINCT FROM the new value>, keyed by (shop, source
id). The same statements run on both stores. A row counts as
  inserted  — its key was new;
  updated   — the order, its line, its shipment or its customer changed;
  unchanged — nothing it carries differs from the store.
Only mapped fields are written, so a source that lacks a column never blanks it.

The staging table lives for the whole file and a second one (`seen`) remembers every
key already taken, so a duplicate id in a later chunk is still caught and memory does
not grow with the file.

Speed (issue 15): the store's own writes dominate. Per order row PostgreSQL maintains
~14 index entries in four tables and runs ~4 foreign-key triggers (~40% of the upserts'
time, measured by disabling them in a benchmark), against ~5 us a row for a bare COPY.
So a chunk does nothing it cannot need: with no staged key in the store before it (a
fresh import) there is no RETURNING to fetch, no prior-order count, no comparison of
order lines and no renumbering; counting works on the few staged lines that existed.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from automail.imports.mapping import ORDER_LINE_FIELDS, Mapping
from automail.models import Customer, Order, OrderLine, Shipment, UtcDateTime

_meta = MetaData()
_T = Column  # brevity below
STAGE = Table(
    "import_stage",
    _meta,
    _T("line", Integer, primary_key=True),
    _T("shop_id", Integer),
    _T("key", String),
    _T("customer_key", String),
    _T("cust_pick", Boolean),
    _T("customer_email", String),
    _T("customer_name", String),
    _T("customer_kana", String),
    _T("customer_phone", String),
    _T("customer_prefecture", String),
    _T("customer_address", String),
    _T("signed_up_at", UtcDateTime()),
    _T("marketing_opt_in", Boolean),
    _T("order_number", String),
    _T("ordered_at", UtcDateTime()),
    _T("purchase_count", Integer),
    _T("subtotal", Integer),
    _T("shipping_fee", Integer),
    _T("tax", Integer),
    _T("total", Integer),
    _T("payment_method", String),
    _T("ship_to_name", String),
    _T("ship_to_address", String),
    _T("sku", String),
    _T("product_name", String),
    _T("quantity", Integer),
    _T("unit_price", Integer),
    _T("shipped_at", UtcDateTime()),
    _T("carrier", String),
    _T("tracking_number", String),
    _T("line_changed", Boolean),
    Index("ix_import_stage_order", "shop_id", "order_number"),
    # (shop, customer key) has no index: every join on it is set-wise (hash), and COPY
    # paid 2 us a row to maintain one.
    prefixes=["TEMPORARY"],
)
SEEN = Table(
    "import_seen",
    _meta,
    _T("shop_id", Integer, primary_key=True),
    _T("key", String, primary_key=True),
    _T("line", Integer),
    prefixes=["TEMPORARY"],
)
STAGE_COLUMNS = [c.name for c in STAGE.columns]
JOIN_COLUMNS = ("shop_id", "key", "customer_key", "cust_pick", "order_number", "shipped_at")

# field -> customers column (orders and customers files both carry customers)
CUSTOMER_FIELDS = {
    "customer_email": "email",
    "customer_name": "name",
    "customer_kana": "name_kana",
    "customer_phone": "phone",
    "customer_prefecture": "prefecture",
    "customer_address": "address",
    "signed_up_at": "signed_up_at",
    "marketing_opt_in": "marketing_opt_in",
}
ORDER_FIELDS = (
    "purchase_count",
    "subtotal",
    "shipping_fee",
    "tax",
    "total",
    "payment_method",
    "ship_to_name",
    "ship_to_address",
)
ORDER_INT_DEFAULTS = {"purchase_count": 1, "subtotal": 0, "shipping_fee": 0, "tax": 0, "total": 0}


@dataclass
class ChunkCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[tuple[int, str, str, str]] = field(default_factory=list)  # found in the store


def open_staging(conn: Connection) -> None:
    """Create the temp tables on this connection (they live until it closes)."""
    _meta.create_all(conn, tables=[STAGE, SEEN])
    conn.execute(delete(STAGE))
    conn.execute(delete(SEEN))


def _insert(conn: Connection):  # noqa: ANN202 (dialect-specific Insert)
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


@dataclass
class Staged:
    """A chunk's rows made ready for the staging table, away from the connection (the
    read-ahead thread does it while the store writes the previous chunk)."""

    columns: list[str]
    copy_text: io.StringIO | None = None  # PostgreSQL: COPY's text format
    records: list[dict] | None = None  # SQLite: executemany


def prepare(good: pd.DataFrame, dialect: str) -> Staged:
    frame = good.reindex(columns=[c for c in STAGE_COLUMNS if c in good])
    if "customer_key" in good:
        frame["cust_pick"] = ~good.duplicated(["shop_id", "customer_key"], keep="last")
        if "signed_up_at" not in good and "ordered_at" in good:
            # a customer first seen on orders signed up with the earliest of them
            first = good.groupby(["shop_id", "customer_key"])["ordered_at"].transform("min")
            frame["signed_up_at"] = first
    frame["line_changed"] = False
    if dialect == "postgresql":
        return Staged(list(frame.columns), copy_text=_copy_text(frame))
    frame = frame.reindex(columns=STAGE_COLUMNS)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return Staged(STAGE_COLUMNS, records=records)


def stage(conn: Connection, rows: Staged) -> None:
    if rows.copy_text is not None:
        conn.execute(text("TRUNCATE import_stage"))  # DELETE left dead rows in table + index
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # a live connection inside the transaction
        cursor = dbapi.cursor()
        cols = ", ".join(f'"{c}"' for c in rows.columns)
        # Read in blocks of 1 MiB: each read needs the GIL, which the read-ahead thread
        # holds for long stretches; 8 KiB blocks (the default) stalled COPY behind it.
        sql = f"COPY import_stage ({cols}) FROM STDIN"
        cursor.copy_expert(sql, rows.copy_text, size=1 << 20)
        cursor.close()
        # The planner must know the staging table's size to join it set-wise, and autovacuum
        # never sees temp tables. Only the join columns: all of them cost 3x (0.35 s a chunk).
        conn.execute(text(f"ANALYZE import_stage ({', '.join(JOIN_COLUMNS)})"))
    else:
        conn.execute(delete(STAGE))
        conn.execute(STAGE.insert(), rows.records)


COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(frame: pd.DataFrame) -> io.StringIO:
    """The frame in COPY's text format, a column at a time: pandas' to_csv spent 20 us a
    row formatting every cell through its generic writer; here only text that holds a
    backslash, tab or line break is escaped, per value, and the rest is joined in C."""
    columns = []
    for name in frame.columns:
        col = frame[name]
        missing = col.isna().to_numpy()
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            values = _iso(col).to_numpy(dtype=object)
        elif pd.api.types.is_bool_dtype(col.dtype):
            values = np.where(col.fillna(False).to_numpy(dtype=bool), "t", "f").astype(object)
        elif pd.api.types.is_integer_dtype(col.dtype):
            values = col.fillna(0).to_numpy(dtype=np.int64).astype(str).astype(object)
        else:
            values = col.to_numpy(dtype=object)
            if missing.any():
                values = np.where(missing, "", values)
            if COPY_SPECIAL.search("".join(values)):
                values = np.array([v.translate(COPY_ESCAPES) for v in values], dtype=object)
        if missing.any():
            values = np.where(missing, "\\N", values)
        columns.append(values)
    return io.StringIO("\n".join(map("\t".join, zip(*columns, strict=True))) + "\n")


def _iso(s: pd.Series) -> pd.Series:
    """UTC timestamps as text for COPY, formatted by numpy (pandas' formatter is 10x slower)."""
    values = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
    text = np.char.add(np.datetime_as_string(values, unit="us"), "+00:00")
    return pd.Series(text, index=s.index, dtype=object)


def take_duplicates(conn: Connection, look: bool = True) -> list[tuple[int, str, int]]:
    """(line, key, first line) of staged rows whose key an earlier chunk already had;
    they leave the staging table, the others are remembered in `seen`. `look=False`:
    the caller knows none can be (no staged key is in the store yet)."""
    s, seen = STAGE, SEEN
    dups: list[tuple[int, str, int]] = []
    if look:
        rows = conn.execute(
            select(s.c.line, s.c.key, seen.c.line).join(
                seen, and_(seen.c.shop_id == s.c.shop_id, seen.c.key == s.c.key)
            )
        ).all()
        dups = [(int(a), str(b), int(c)) for a, b, c in rows]
    if dups:
        conn.execute(delete(s).where(s.c.line.in_([d[0] for d in dups])))
    conn.execute(
        SEEN.insert().from_select(
            ["shop_id", "key", "line"], select(s.c.shop_id, s.c.key, s.c.line)
        )
    )
    return dups


def _distinct(table: Table, excluded, names: list[str]):  # noqa: ANN001, ANN202
    return or_(*[table.c[n].is_distinct_from(excluded[n]) for n in names])


def _keys(result) -> set[tuple[int, str]]:  # noqa: ANN001
    """(shop id, key) pairs of a result, fetched at once (row-by-row costs 4 us a row)."""
    return {(int(a), str(b)) for a, b in result.all()}


def upsert_customers(conn: Connection, mapping: Mapping) -> tuple:
    """Upsert the staged customers; returns (existing keys before, changed keys)."""
    s, c = STAGE, Customer.__table__
    mapped = [f for f in CUSTOMER_FIELDS if mapping.has(f)]
    existing = _keys(
        conn.execute(
            select(s.c.shop_id, s.c.customer_key)
            .join(c, and_(c.c.shop_id == s.c.shop_id, c.c.source_id == s.c.customer_key))
            .where(s.c.cust_pick)
        )
    )
    signed_up = func.coalesce(s.c.signed_up_at, func.current_timestamp())
    values: dict[str, Any] = {
        "shop_id": s.c.shop_id,
        "source_id": s.c.customer_key,
        "email": s.c.customer_email,
        "name": func.coalesce(s.c.customer_name, ""),
        "signed_up_at": signed_up,
        "marketing_opt_in": func.coalesce(s.c.marketing_opt_in, true()),
        "address_valid": true(),
        "address_cleaned": literal(False),
        "consecutive_failures": literal(0),
    }
    for f in mapped:
        values.setdefault(CUSTOMER_FIELDS[f], s.c[f])
    ins = _insert(conn)(c).from_select(list(values), select(*values.values()).where(s.c.cust_pick))
    names = [CUSTOMER_FIELDS[f] for f in mapped]
    ins = ins.on_conflict_do_update(
        index_elements=["shop_id", "source_id"],
        set_={n: ins.excluded[n] for n in names},
        where=_distinct(c, ins.excluded, names),
    )
    return existing, _changed(conn, ins, existing, c.c.shop_id, c.c.source_id)


def _changed(conn: Connection, ins, existing: set, *key) -> set:  # noqa: ANN001
    """Keys the upsert updated. Only a key that existed can have been updated, so with
    none existing the statement runs without RETURNING: fetching every inserted key back
    cost more than the insert's own index work on a fresh import."""
    if not existing:
        conn.execute(ins)
        return set()
    return _keys(conn.execute(ins.returning(*key))) & existing


def existing_lines(conn: Connection, table: Table, key_column: str) -> dict[tuple, int]:
    """(shop id, key) -> staged line, for the staged rows whose key `table` already has
    (orders by number; shipments by source id). Empty on a fresh import: cheap."""
    s = STAGE
    key = s.c[key_column]
    query = select(s.c.shop_id, key, s.c.line)
    if table is Shipment.__table__:  # a row without a shipping date carries no shipment
        on = and_(table.c.shop_id == s.c.shop_id, table.c.source_id == key)
        query = query.join(table, on).where(s.c.shipped_at.is_not(None))
    else:
        query = query.join(table, and_(table.c.shop_id == s.c.shop_id, table.c.order_number == key))
    rows = conn.execute(query).all()
    return {(int(a), str(b)): int(line) for a, b, line in rows}


def upsert_orders(
    conn: Connection, mapping: Mapping, existing: dict[tuple, int], customers_existed: bool
) -> set:
    """Upsert the staged orders (their customers first); the keys it changed.

    `existing` comes from existing_lines(orders) before; `customers_existed`: whether any
    staged customer was in the store before this chunk (else none has prior orders)."""
    s, o, c = STAGE, Order.__table__, Customer.__table__
    mapped = [f for f in ORDER_FIELDS if mapping.has(f)]
    values: dict[str, Any] = {
        "shop_id": s.c.shop_id,
        "customer_id": c.c.id,
        "order_number": s.c.order_number,
        "ordered_at": s.c.ordered_at,
    }
    for f, default in ORDER_INT_DEFAULTS.items():
        values[f] = func.coalesce(s.c[f], default) if f in mapped else literal(default)
    # A customer new in this chunk has no orders in the store yet: no prior count to join.
    prior = _prior_orders() if customers_existed else None
    if "purchase_count" not in mapped:
        # The order's place in its customer's history, by (ordered_at, order number): the
        # store's other orders come first (new orders are the newest, as a rule; an
        # order arriving late is put right by renumber_purchases).
        rank = func.row_number().over(
            partition_by=[s.c.shop_id, s.c.customer_key],
            order_by=[s.c.ordered_at, s.c.order_number],
        )
        values["purchase_count"] = rank if prior is None else func.coalesce(prior.c.n, 0) + rank
    for f in mapped:
        values.setdefault(f, s.c[f])
    src = (
        select(*values.values())
        .select_from(s)
        .join(c, and_(c.c.shop_id == s.c.shop_id, c.c.source_id == s.c.customer_key))
    )
    if prior is not None:
        src = src.outerjoin(prior, prior.c.customer_id == c.c.id)
    ins = _insert(conn)(o).from_select(list(values), src.where(true()))
    names = ["customer_id", "ordered_at", *mapped]
    ins = ins.on_conflict_do_update(
        index_elements=["shop_id", "order_number"],
        set_={n: ins.excluded[n] for n in names},
        where=_distinct(o, ins.excluded, names),
    )
    return _changed(conn, ins, set(existing), o.c.shop_id, o.c.order_number)


def _prior_orders():  # noqa: ANN202
    """Per customer of the chunk: how many orders the store has that the chunk does not."""
    s, o, c = STAGE, Order.__table__.alias("prior"), Customer.__table__.alias("cust")
    s2 = STAGE.alias("staged")
    customers = (
        select(c.c.id)
        .join(s, and_(c.c.shop_id == s.c.shop_id, c.c.source_id == s.c.customer_key))
        .where(true())
    )
    return (
        select(o.c.customer_id, func.count().label("n"))
        .where(
            o.c.customer_id.in_(customers),
            ~exists().where(s2.c.shop_id == o.c.shop_id, s2.c.order_number == o.c.order_number),
        )
        .group_by(o.c.customer_id)
        .subquery("prior_orders")
    )


def _orders_join():  # noqa: ANN202
    s, o = STAGE, Order.__table__
    return and_(o.c.shop_id == s.c.shop_id, o.c.order_number == s.c.order_number)


def replace_changed_lines(conn: Connection, mapping: Mapping, orders_existed: bool) -> set[int]:
    """The order's item (one per imported order): replaced when it differs; staged lines.

    With no staged order in the store before this chunk, every one is new and simply gets
    its line: comparing first cost a correlated look-up and a staging update per row."""
    if not any(mapping.has(f) for f in ORDER_LINE_FIELDS):
        return set()
    s, o, ol = STAGE, Order.__table__, OrderLine.__table__
    sku = func.coalesce(s.c.sku, "")
    name = func.coalesce(s.c.product_name, "")
    qty = func.coalesce(s.c.quantity, 1)
    price = func.coalesce(s.c.unit_price, 0)
    has_item = or_(s.c.sku.is_not(None), s.c.product_name.is_not(None))

    def insert_lines(where: Any) -> None:  # one statement shape for both paths
        conn.execute(
            ol.insert().from_select(
                ["order_id", "sku", "name", "quantity", "unit_price"],
                select(o.c.id, sku, name, qty, price)
                .select_from(s)
                .join(o, _orders_join())
                .where(where),
            )
        )

    if not orders_existed:
        insert_lines(has_item)
        return set()  # every staged line is an inserted one
    same = (
        select(ol.c.id)
        .join(o, o.c.id == ol.c.order_id)
        .where(
            _orders_join(),
            ol.c.sku == sku,
            ol.c.name == name,
            ol.c.quantity == qty,
            ol.c.unit_price == price,
        )
    )
    conn.execute(update(s).where(has_item, ~exists(same)).values(line_changed=True))
    changed_orders = select(o.c.id).join(s, _orders_join()).where(s.c.line_changed)
    conn.execute(delete(ol).where(ol.c.order_id.in_(changed_orders)))
    insert_lines(s.c.line_changed)
    return {int(r[0]) for r in conn.execute(select(s.c.line).where(s.c.line_changed))}


def orphan_shipments(conn: Connection) -> list[tuple[int, str]]:
    """Staged shipments whose order is not in the store: (line, order number), unstaged."""
    s, o = STAGE, Order.__table__
    rows = conn.execute(
        select(s.c.line, s.c.order_number)
        .select_from(s)
        .outerjoin(o, _orders_join())
        .where(o.c.id.is_(None))
    ).all()
    if rows:
        conn.execute(delete(s).where(s.c.line.in_([r[0] for r in rows])))
    return [(int(a), str(b)) for a, b in rows]


def upsert_shipments(
    conn: Connection, mapping: Mapping, key_column: str, existing: dict[tuple, int]
) -> set:
    """Staged rows with a shipping date become shipments keyed by (shop, `key_column`);
    `existing` from existing_lines(shipments) before. Returns the keys it changed."""
    s, o, sh = STAGE, Order.__table__, Shipment.__table__
    key = s.c[key_column]
    values = {
        "shop_id": s.c.shop_id,
        "source_id": key,
        "order_id": o.c.id,
        "confirmed_at": s.c.shipped_at,
        "carrier": func.coalesce(s.c.carrier, ""),
        "tracking_number": s.c.tracking_number,
    }
    src = select(*values.values()).select_from(s).join(o, _orders_join())
    src = src.where(s.c.shipped_at.is_not(None))
    ins = _insert(conn)(sh).from_select(list(values), src)
    names = ["order_id", "confirmed_at"]
    names += [f for f in ("carrier", "tracking_number") if mapping.has(f)]
    ins = ins.on_conflict_do_update(
        index_elements=["shop_id", "source_id"],
        set_={n: ins.excluded[n] for n in names},
        where=_distinct(sh, ins.excluded, names),
    )
    return _changed(conn, ins, set(existing), sh.c.shop_id, sh.c.source_id)


def renumber_purchases(conn: Connection) -> None:
    """purchase_count (the A5 stage) = the order's place in its customer's history.

    New orders got theirs on insert; this renumbers only the customers whose history
    the chunk changed in the middle: an order that arrived after a later one.
    """
    conn.execute(
        text("""
        UPDATE orders SET purchase_count = r.n
        FROM (
            SELECT o.id, row_number() OVER (
                PARTITION BY o.customer_id ORDER BY o.ordered_at, o.order_number) AS n
            FROM orders o
            WHERE o.customer_id IN (
                SELECT o1.customer_id FROM import_stage s JOIN orders o1
                  ON o1.shop_id = s.shop_id AND o1.order_number = s.order_number
                WHERE EXISTS (
                    SELECT 1 FROM orders o2
                    WHERE o2.customer_id = o1.customer_id
                      AND (o2.ordered_at, o2.order_number) > (o1.ordered_at, o1.order_number)
                      AND NOT EXISTS (SELECT 1 FROM import_stage s2
                          WHERE s2.shop_id = o2.shop_id AND s2.order_number = o2.order_number)))
        ) r
        WHERE orders.id = r.id AND orders.purchase_count <> r.n""")
    )


def close_staging(conn: Connection) -> None:
    conn.execute(delete(STAGE))
    conn.execute(delete(SEEN))
