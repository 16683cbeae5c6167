"""Builders shared by the management tests: mails in any status, at given times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from automail.models import Mail, Shop
from automail.sample_data import make_shop

_seq = itertools.count(1)


def shop(session: Session, code: str = "tea") -> Shop:
    return session.query(Shop).filter_by(code=code).one_or_none() or make_shop(session, code)


def mail(
    session: Session,
    shop_: Shop,
    *,
    status: str = "unsent",
    kind: str = "order_confirmation",
    to: str = "hanako@example.jp",
    body: str = "ご注文ありがとうございます。",
    html: str | None = None,
    created_at: datetime | None = None,
    sent_at: datetime | None = None,
    subject: str = "ご注文確認",
) -> Mail:
    m = Mail(
        shop_id=shop_.id,
        kind=kind,
        source_key=f"test:{next(_seq)}",
        status=status,
        to_address=to,
        from_address=shop_.from_address,
        from_name=shop_.from_name,
        reply_to=shop_.reply_to,
        subject=subject,
        body_text=body,
        body_html=html,
        created_at=created_at or datetime.now(UTC),
        sent_at=sent_at,
        rendered_at=datetime.now(UTC),
    )
    session.add(m)
    session.flush()
    return m
