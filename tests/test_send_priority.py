"""One send path with priority lanes (H3): a newsletter far larger than the per-run cap
never pushes an order confirmation into `held`; unreleased newsletter mails are never
claimed; over the cap, bulk mails wait for the next run while transactional ones are
held with a notice (B7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from automail import settings
from automail.db import session_factory
from automail.models import Campaign, Mail
from automail.sample_data import make_shop
from automail.sending import plan_run

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
NEWSLETTER = 40_000
CAP = 30_000


def _rows(shop, kind: str, n: int, tag: str, **extra: object) -> list[dict]:  # noqa: ANN001
    return [
        {
            "shop_id": shop.id,
            "kind": kind,
            "source_key": f"{tag}:{i}",
            "to_address": f"{tag}{i}@example.jp",
            "from_address": shop.from_address,
            "reply_to": shop.reply_to,
            "subject": tag,
            "body_text": "本文",
            **extra,
        }
        for i in range(n)
    ]


def test_newsletter_over_the_cap_never_holds_an_order_confirmation(
    engine, session: Session
) -> None:  # noqa: ANN001, E501
    shop = make_shop(session)
    campaign = Campaign(
        shop_id=shop.id, name="冬の新茶", subject="s", body="b", body_format="text",
        scheduled_at=NOW - timedelta(hours=1), status="sending",
    )  # fmt: skip
    session.add(campaign)
    session.flush()
    released = _rows(shop, "campaign", NEWSLETTER, "nl", campaign_id=campaign.id,
                     due_at=NOW - timedelta(minutes=5))  # fmt: skip
    for start in range(0, NEWSLETTER, 5000):
        session.execute(insert(Mail), released[start : start + 5000])
    # Unreleased newsletter mails (the campaign gate has not let them go) and the shop's
    # transactional mails, all created after the newsletter (higher ids).
    session.execute(insert(Mail), _rows(shop, "campaign", 50, "wait", campaign_id=campaign.id))
    session.execute(insert(Mail), _rows(shop, "order_confirmation", 5, "order"))
    session.execute(insert(Mail), _rows(shop, "shipping_notice", 3, "ship"))
    session.execute(insert(Mail), _rows(shop, "step", 4, "step", due_at=NOW))
    settings.put(session, "send_cap_per_run", CAP)
    session.commit()

    plan = plan_run(session_factory(engine), "priority", NOW)

    claimed = {i for b in plan.batches for i in b}
    kinds = dict(
        session.execute(select(Mail.id, Mail.kind).where(Mail.claimed_by == plan.claim_id)).all()
    )
    assert set(kinds) == claimed and len(claimed) == CAP
    counts = {k: list(kinds.values()).count(k) for k in set(kinds.values())}
    assert counts == {
        "order_confirmation": 5, "shipping_notice": 3, "step": 4, "campaign": CAP - 12,
    }  # fmt: skip
    s = plan.summary
    assert (s.held_cap, s.deferred_cap, s.notices) == (0, NEWSLETTER - (CAP - 12), 0)
    assert session.scalar(select(func.count()).where(Mail.status == "held")) == 0
    waiting = select(Mail.claimed_by).where(Mail.source_key.like("wait:%"))
    assert set(session.scalars(waiting)) == {None}  # unreleased: never claimed


def test_transactional_over_the_cap_is_held_with_a_notice(engine, session: Session) -> None:  # noqa: ANN001
    shop = make_shop(session)
    session.execute(insert(Mail), _rows(shop, "step", 3, "step", due_at=NOW))
    session.execute(insert(Mail), _rows(shop, "order_confirmation", 4, "order"))
    settings.put(session, "send_cap_per_run", 2)
    session.commit()

    plan = plan_run(session_factory(engine), "cap", NOW)

    claimed = session.scalars(
        select(Mail.source_key).where(Mail.claimed_by == plan.claim_id, Mail.kind != "notice")
    ).all()
    assert sorted(claimed) == ["order:0", "order:1"]
    assert (plan.summary.held_cap, plan.summary.deferred_cap, plan.summary.notices) == (2, 3, 1)
    held = session.scalars(select(Mail.source_key).where(Mail.status == "held")).all()
    assert sorted(held) == ["order:2", "order:3"]
    step_status = session.scalars(select(Mail.status).where(Mail.kind == "step")).all()
    assert set(step_status) == {"unsent"}
