"""Turning an audience into `mails` rows (newsletters and step mails).

Rows are inserted in chunks with ON CONFLICT DO NOTHING on the idempotency key
(shop, kind, source_key), so a rerun, a backfill or two workers at once never
create a second mail for the same recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.content import CompiledContent, context_for
from automail.campaigns.unsubscribe import (
    URL_PATH,
    list_unsubscribe_headers,
    make_token,
    secret_key,
)
from automail.models import Customer, Mail, Shop
from automail.tracking.links import Tracker

CHUNK = 2000
RECIPIENT_COLUMNS = (
    Customer.id,
    Customer.name,
    Customer.email,
    Customer.prefecture,
    Customer.coupon_code,
)


def insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> int:
    """INSERT mails, skipping rows whose (shop, kind, source_key) exists; returns inserted."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(Mail).on_conflict_do_nothing(
        index_elements=["shop_id", "kind", "source_key"]
    )
    return len(session.execute(stmt.returning(Mail.id), rows).all())


def iter_recipients(session: Session, ids: Select) -> Iterator[list[Any]]:
    """Recipient rows of an audience, streamed in chunks ordered by customer id."""
    sub = ids.subquery("recipients")
    result = session.execute(
        select(*RECIPIENT_COLUMNS).join(sub, sub.c.id == Customer.id).order_by(Customer.id),
        execution_options={"yield_per": CHUNK},
    )
    for part in result.partitions(CHUNK):
        yield list(part)


class MarketingMailer:
    """Builds marketing mail rows of one shop: merge fields + unsubscribe link/headers."""

    def __init__(
        self,
        session: Session,
        shop: Shop,
        compiled: CompiledContent,
        tracker: Tracker | None = None,
    ):
        self.shop = shop
        self.compiled = compiled
        self.tracker = tracker  # opens/clicks (automail.tracking), None when off
        self.key = secret_key()
        self.base = str(settings.get(session, "public_base_url")).rstrip("/")
        self.mailto = shop.contact_address

    def unsubscribe_url(self, customer_id: int) -> str:
        return f"{self.base}{URL_PATH}?t={quote(make_token(self.shop.id, customer_id, self.key))}"

    def row(
        self, customer: Any, *, kind: str, source_key: str, now: datetime, **extra: Any
    ) -> dict:
        url = self.unsubscribe_url(customer.id)
        context = context_for(self.shop, customer, url)
        content = self.compiled.render(context)
        if self.tracker is not None:  # compiled from tracker.template: this mail's token
            content.body_text, content.body_html = self.tracker.fill(
                source_key, content.body_text, content.body_html
            )
        return {
            "shop_id": self.shop.id,
            "kind": kind,
            "source_key": source_key,
            "status": "unsent",
            "mode": "auto",
            "customer_id": customer.id,
            "to_address": customer.email,
            "from_address": self.shop.from_address,
            "from_name": self.shop.from_name,
            "reply_to": self.shop.reply_to,
            "return_path": self.shop.return_path,
            "subject": content.subject,
            "body_text": content.body_text,
            "body_html": content.body_html,
            "extra_headers": list_unsubscribe_headers(url, self.mailto),
            "rendered_at": now,
            "device": "pc",
            "attempt_count": 0,
            **extra,
        }


def create_mails(
    session: Session,
    mailer: MarketingMailer,
    ids: Select,
    *,
    kind: str,
    source_key: Callable[[int], str],
    now: datetime,
    **extra: Any,
) -> int:
    created = 0
    for chunk in iter_recipients(session, ids):
        rows = [
            mailer.row(c, kind=kind, source_key=source_key(c.id), now=now, **extra) for c in chunk
        ]
        created += insert_ignoring_duplicates(session, rows)
    session.flush()
    return created
