"""CSV export of any search result (all pages), through the one CSV writer
(automail.csv_safe: UTF-8 with BOM, formula-like cells neutralised)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.csv_safe import open_csv, write_rows
from automail.management.search import MailFilter, local_minute, where_clauses
from automail.models import Customer, Mail, Order, Shop

COLUMNS = [
    "id",
    "created_at",
    "shop",
    "kind",
    "to_address",
    "status",
    "sent_at",
    "attempt_count",
    "last_error",
    "subject",
    "customer_name",
    "order_number",
]
CHUNK = 5000


def export_csv(session: Session, f: MailFilter, out: str | Path | IO[str]) -> int:
    """Write every mail matching `f` (ignoring its paging) as CSV; returns the row count.

    The filter is applied (and refused, FilterError) before a file is created."""
    query = (
        select(
            Mail.id,
            Mail.created_at,
            Shop.code,
            Mail.kind,
            Mail.to_address,
            Mail.status,
            Mail.sent_at,
            Mail.attempt_count,
            Mail.last_error,
            Mail.subject,
            Customer.name,
            Order.order_number,
        )
        .join(Shop, Shop.id == Mail.shop_id)
        .outerjoin(Customer, Customer.id == Mail.customer_id)
        .outerjoin(Order, Order.id == Mail.order_id)
        .where(*where_clauses(session, f))
        .order_by(Mail.created_at.desc(), Mail.id.desc())
        .execution_options(yield_per=CHUNK)
    )
    result = session.execute(query)
    rows = (
        (r[0], local_minute(r[1], f.tz), *r[2:6], local_minute(r[6], f.tz), *r[7:]) for r in result
    )
    if isinstance(out, str | Path):
        with open_csv(out) as handle:
            return write_rows(handle, COLUMNS, rows)
    return write_rows(out, COLUMNS, rows)
