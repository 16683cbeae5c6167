"""A sent newsletter with open and click tracking, for the tracking tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns import create_campaign, tick
from automail.models import Campaign, Mail, TrackingLink
from automail.sample_data import make_customer, make_shop

NOW = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo
BODY = (
    "<html><body><p>{{ customer_name }} 様</p>"
    '<p><a href="https://shop.example.jp/sale?x=1&amp;y=2">セール会場</a></p>'
    '<p><a href="https://shop.example.jp/new">新商品</a> '
    "<a href='https://shop.example.jp/faq'>FAQ</a> "
    '<a href="mailto:help@example.jp">問い合わせ</a></p>'
    "</body></html>"
)
URLS = (
    "https://shop.example.jp/sale?x=1&y=2",
    "https://shop.example.jp/new",
    "https://shop.example.jp/faq",
)


def sent_campaign(
    session: Session,
    customers: int = 3,
    *,
    base_url: str = "http://127.0.0.1:8080",
    sent_at: datetime | None = None,
    body: str = BODY,
    shop_code: str = "tea",
    **kw,
) -> tuple[Campaign, list[Mail]]:
    """A tracked HTML campaign whose mails are rendered and marked sent at `sent_at`."""
    settings.put(session, "public_base_url", base_url)
    shop = make_shop(session, code=shop_code)
    for i in range(customers):
        make_customer(session, shop, f"c{i}.{shop_code}@example.jp", name=f"顧客{i}")
    args = {
        "shop_id": shop.id,
        "name": "夏のセール",
        "subject": "夏のセール",
        "body": body,
        "body_format": "html",
        "scheduled_at": NOW + timedelta(hours=2),
        "now": NOW,
        "track_opens": True,
        "track_clicks": True,
    }
    args.update(kw)
    campaign = create_campaign(session, **args)
    tick(session, NOW + timedelta(hours=2))
    mails = list(
        session.scalars(select(Mail).where(Mail.campaign_id == campaign.id).order_by(Mail.id))
    )
    for mail in mails:
        mail.status, mail.sent_at, mail.next_attempt_at = "sent", sent_at or NOW, None
    session.commit()  # the public app reads links and mails through its own sessions
    return campaign, mails


def links_of(session: Session, campaign: Campaign) -> dict[str, int]:
    rows = session.execute(
        select(TrackingLink.url, TrackingLink.id).where(
            TrackingLink.scope == "campaign", TrackingLink.scope_id == campaign.id
        )
    )
    return dict(rows.all())
