"""Start events of step sequences (D1 + issue 18): sign-up, first order, any order, or a
person's click on a tracked link.

Each event source is a SELECT of (customer_id, at, ref): `ref` is the event's own id
(order id, hit id) when the sequence allows restarts, so each event starts the sequence
once; otherwise the customer's earliest qualifying event is their one start (seed 002:
送信済の人も含めて送信する = しない). Events dated before the customer existed
(imported orders older than the sign-up) never start anything; machine clicks
(scanners, prefetch) never either.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, func, null, select
from sqlalchemy.sql import Subquery

from automail.models import Customer, Order, StepSequence, TrackingHit

START_EVENTS = ("signup", "first_order", "order", "click")
RESTARTABLE = ("order", "click")


def check_start(start_event: str, start_link_id: int | None, allow_restart: bool) -> None:
    if start_event not in START_EVENTS:
        raise ValueError(f"start_event: {start_event!r} is not one of {', '.join(START_EVENTS)}")
    if start_event == "click" and not start_link_id:
        raise ValueError("start_link_id: start_event 'click' needs the tracked link's id")
    if start_event != "click" and start_link_id:
        raise ValueError(f"start_link_id: only for start_event 'click', not {start_event!r}")
    if allow_restart and start_event not in RESTARTABLE:
        raise ValueError(
            f"allow_restart: a {start_event!r} happens once per customer; restarts apply to "
            f"{' and '.join(RESTARTABLE)} events"
        )


def start_events(seq: StepSequence) -> Subquery:
    """SELECT customer_id, at, ref — one row per start of `seq`."""
    if seq.start_event == "signup":
        return select(
            Customer.id.label("customer_id"),
            Customer.signed_up_at.label("at"),
            null().cast(Integer).label("ref"),
        ).subquery("starts")
    if seq.start_event == "first_order":
        first = (
            select(Order.customer_id.label("customer_id"), func.min(Order.ordered_at).label("at"))
            .group_by(Order.customer_id)
            .subquery("first_orders")
        )
        return (
            select(first.c.customer_id, first.c.at, null().cast(Integer).label("ref"))
            .join(Customer, Customer.id == first.c.customer_id)
            .where(first.c.at >= Customer.signed_up_at)
            .subquery("starts")
        )
    table: Any
    who: Any
    if seq.start_event == "order":
        table, who, at, ref = Order, Order.customer_id, Order.ordered_at, Order.id
        where = [Order.shop_id == seq.shop_id]
    else:
        table, who, at, ref = TrackingHit, TrackingHit.customer_id, TrackingHit.at, TrackingHit.id
        where = [
            TrackingHit.link_id == seq.start_link_id,
            TrackingHit.kind == "click",
            TrackingHit.machine.is_(None),
        ]
    where.append(at >= Customer.signed_up_at)  # never an event from before the customer
    if seq.starts_from is not None:
        where.append(at >= seq.starts_from)
    if seq.allow_restart:
        columns = (who.label("customer_id"), at.label("at"), ref.label("ref"))
    else:
        columns = (
            who.label("customer_id"),
            func.min(at).label("at"),
            null().cast(Integer).label("ref"),
        )
    query = select(*columns).select_from(table).join(Customer, Customer.id == who).where(*where)
    if not seq.allow_restart:
        query = query.group_by(who)
    return query.subquery("starts")
