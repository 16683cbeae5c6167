"""Test sends of a newsletter (C2): to staff addresses, merge fields of a real customer.

Merge fields come from the newest eligible customer of the shop (seed 002: 登録日が
最新のリード); with none, they render empty. The unsubscribe link in a test mail
carries customer id 0, so a staff member clicking it unsubscribes nobody. Test mails
are kind `campaign` with source_key `campaign-test:{id}:{uuid}`, count toward the
monthly quota (they go out through the same server), and never toward the campaign's
own counts or "already received".
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.addresses import check_address
from automail.campaigns import audience
from automail.campaigns.content import CompiledContent, context_for
from automail.campaigns.lifecycle import _content
from automail.campaigns.mailing import MarketingMailer, insert_ignoring_duplicates
from automail.campaigns.schedule import get_campaign
from automail.models import Mail, Shop
from automail.states import CAMPAIGN


def parse_address_list(text: str) -> list[str]:
    """A comma-separated address list; every bad address is named in one error."""
    addresses = [a.strip() for a in (text or "").split(",") if a.strip()]
    if not addresses:
        raise ValueError(f"to: {text!r} holds no address (comma-separated list expected)")
    problems = [p for p in (check_address(a) for a in addresses) if p]
    if problems:
        raise ValueError("to: " + "; ".join(problems))
    return addresses


def create_test_mails(
    session: Session, campaign_id: int, to: str, now: datetime | None = None
) -> list[int]:
    """Insert one test mail per address (unsent, due now) and return their ids."""
    now = now or datetime.now(UTC)
    addresses = parse_address_list(to)
    campaign = get_campaign(session, campaign_id)
    shop = session.get_one(Shop, campaign.shop_id)
    subject, body, fmt = _content(session, campaign)
    mailer = MarketingMailer(session, shop, CompiledContent(subject, body, fmt, campaign.signature))
    sample = audience.newest_eligible(session, shop.id)
    url = mailer.unsubscribe_url(0)
    content = mailer.compiled.render(context_for(shop, sample, url))
    keys = []
    rows = []
    for address in addresses:
        key = f"campaign-test:{campaign.id}:{uuid.uuid4().hex}"
        keys.append(key)
        row = mailer.row(
            _Nobody(),  # headers carry the harmless customer-0 link
            kind=CAMPAIGN,
            source_key=key,
            now=now,
            campaign_id=campaign.id,
            due_at=now,
            next_attempt_at=now,
        )
        row.update(
            customer_id=None,
            to_address=address,
            subject=f"[テスト] {content.subject}",
            body_text=content.body_text,
            body_html=content.body_html,
        )
        rows.append(row)
    insert_ignoring_duplicates(session, rows)
    session.flush()
    return list(session.scalars(select(Mail.id).where(Mail.source_key.in_(keys)).order_by(Mail.id)))


class _Nobody:
    id = 0
    name = ""
    email = ""
    prefecture = ""
    coupon_code = ""


def test_send(
    session_factory,
    campaign_id: int,
    to: str,
    actor: str = "cli",
    smtp=None,  # noqa: ANN001
) -> list[int]:
    """C2: create the test mails and send them at once through the sending package."""
    with session_factory() as session, session.begin():
        ids = create_test_mails(session, campaign_id, to)
    from automail.sending import send_now

    send_now(session_factory, ids, actor, smtp=smtp)
    return ids
