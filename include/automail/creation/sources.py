"""Streaming the orders/shipments a creation window covers, in keyset-paginated chunks.

Each chunk is a fresh query continuing after the last (time, id) seen, so memory
stays flat however many orders a window holds, and no server-side cursor has to
stay open across the inserts. Rows that already have their mail are dropped before
rendering (one lookup of the chunk's keys in the idempotency index), so reruns cost
a scan, not a re-render.

The lookup is a separate query on purpose, not an anti-join in the source query: on
the first run after a kind is switched on (A3 lookback), `mails` grows from empty to
the whole window within one run, statistics lag behind, and PostgreSQL planned the
anti-join as a hash of all of `mails` per chunk — quadratic, 13 s per chunk at 50k
orders. A key lookup is cheap under either plan: a small table scans fast, a large
one is probed through the unique index.

Parallel workers split a window by event id (`id % partitions`), filtered here and not
in SQL: PostgreSQL estimates any `expr = const` at 0.5%, and with that estimate it
planned each chunk as a scan and sort of the whole window instead of walking the
(time, id) index — 2 s per chunk at 1M orders. Every worker reads the window's rows;
reading is a small part of the cost, rendering is the large one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ARRAY, BigInteger, String, any_, bindparam, select, tuple_
from sqlalchemy.orm import Session

from automail.db import take_write_lock
from automail.models import Customer, Mail, Order, OrderLine, Shipment
from automail.states import ORDER_CONFIRMATION

CUSTOMER_COLS = ("id", "name", "email", "prefecture", "coupon_code")
ORDER_COLS = (
    "id",
    "order_number",
    "ordered_at",
    "purchase_count",
    "subtotal",
    "shipping_fee",
    "tax",
    "total",
    "payment_method",
    "ship_to_name",
    "ship_to_address",
)
SHIPMENT_COLS = ("id", "carrier", "tracking_number", "confirmed_at")
KEY_LOOKUP_CHUNK = 900  # SQLite: under its bound-parameter limit with room to spare


@dataclass(frozen=True)
class SourceRow:
    """One event that wants a mail: its key, and plain objects for the template."""

    source_key: str
    customer: SimpleNamespace
    order: SimpleNamespace
    shipment: SimpleNamespace | None
    lines: list[SimpleNamespace]


def source_key(kind: str, order_id: int, shipment_id: int | None) -> str:
    return f"order:{order_id}" if kind == ORDER_CONFIRMATION else f"shipment:{shipment_id}"


def _columns(model: type, names: tuple[str, ...], prefix: str) -> list:
    return [getattr(model, n).label(f"{prefix}{n}") for n in names]


def _pick(row: object, names: tuple[str, ...], prefix: str) -> SimpleNamespace:
    return SimpleNamespace(**{n: getattr(row, f"{prefix}{n}") for n in names})


def stream_sources(
    session: Session,
    shop_id: int,
    kind: str,
    lower: datetime,
    upper: datetime,
    chunk_size: int,
    partition: int = 0,
    partitions: int = 1,
) -> Iterator[list[SourceRow]]:
    if type(chunk_size) is not int or chunk_size < 1:
        # LIMIT 0 reads nothing and would look like an empty window: the run would then
        # mark the window covered and its orders would never get mails.
        raise ValueError(f"creation_chunk_size: {chunk_size!r} must be a whole number >= 1")
    by_order = kind == ORDER_CONFIRMATION
    time_col = Order.ordered_at if by_order else Shipment.confirmed_at
    id_col = Order.id if by_order else Shipment.id
    cols = [
        time_col.label("ev_time"),
        id_col.label("ev_id"),
        *_columns(Order, ORDER_COLS, "o_"),
        *_columns(Customer, CUSTOMER_COLS, "c_"),
    ]
    query = select(*cols).select_from(Order).join(Customer, Customer.id == Order.customer_id)
    if not by_order:
        cols += _columns(Shipment, SHIPMENT_COLS, "s_")
        query = (
            select(*cols)
            .select_from(Shipment)
            .join(Order, Order.id == Shipment.order_id)
            .join(Customer, Customer.id == Order.customer_id)
        )
    query = (
        query.where(Order.shop_id == shop_id, time_col >= lower, time_col < upper)
        .order_by(time_col, id_col)
        .limit(chunk_size)
    )

    after: tuple[datetime, int] | None = None
    while True:
        page = query if after is None else query.where(tuple_(time_col, id_col) > after)
        take_write_lock(session)
        rows = session.execute(page).all()
        if not rows:
            return
        after = (rows[-1].ev_time, rows[-1].ev_id)
        mine = rows if partitions == 1 else [r for r in rows if r.ev_id % partitions == partition]
        keyed = [(source_key(kind, r.o_id, None if by_order else r.s_id), r) for r in mine]
        done = _existing_keys(session, shop_id, kind, [key for key, _ in keyed])
        keyed = [(key, r) for key, r in keyed if key not in done]
        if keyed:
            lines = _lines_for(session, [r.o_id for _, r in keyed])
            yield [
                SourceRow(
                    source_key=key,
                    customer=_pick(r, CUSTOMER_COLS, "c_"),
                    order=_pick(r, ORDER_COLS, "o_"),
                    shipment=None if by_order else _pick(r, SHIPMENT_COLS, "s_"),
                    lines=lines.get(r.o_id, []),
                )
                for key, r in keyed
            ]
        if len(rows) < chunk_size:
            return


def _one_of(session: Session, column: Any, values: list, item_type: Any) -> Any:
    """`column IN values`; on PostgreSQL as `= ANY(array)`, ONE parameter: SQLAlchemy
    binds an IN list parameter by parameter, which cost more than the lookups."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(item_type)))
    return column.in_(values)


def _existing_keys(session: Session, shop_id: int, kind: str, keys: list[str]) -> set[str]:
    """The keys among `keys` that already have their mail (uq_mails_source)."""
    if not keys:
        return set()
    pg = session.get_bind().dialect.name == "postgresql"
    step = len(keys) if pg else KEY_LOOKUP_CHUNK  # PostgreSQL: one array parameter
    found: set[str] = set()
    for start in range(0, len(keys), step):
        found.update(
            session.scalars(
                select(Mail.source_key).where(
                    Mail.shop_id == shop_id,
                    Mail.kind == kind,
                    _one_of(session, Mail.source_key, keys[start : start + step], String),
                )
            )
        )
    return found


def _lines_for(session: Session, order_ids: list[int]) -> dict[int, list[SimpleNamespace]]:
    grouped: dict[int, list[SimpleNamespace]] = defaultdict(list)
    stmt = (
        select(
            OrderLine.order_id,
            OrderLine.sku,
            OrderLine.name,
            OrderLine.quantity,
            OrderLine.unit_price,
        )
        .where(_one_of(session, OrderLine.order_id, order_ids, BigInteger))
        .order_by(OrderLine.order_id, OrderLine.id)
    )
    for order_id, sku, name, quantity, unit_price in session.execute(stmt):
        grouped[order_id].append(
            SimpleNamespace(sku=sku, name=name, quantity=quantity, unit_price=unit_price)
        )
    return grouped
