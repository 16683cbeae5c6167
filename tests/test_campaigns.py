"""Newsletters (C1–C9) on both stores: rules at scheduling, audience, status machine.

The SMTP hand-off is simulated here by setting mail statuses the way the sending
machinery does; tests/test_campaign_dag.py runs the real thing end to end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns import (
    CampaignRefused,
    audience_csv,
    campaign_audience,
    cancel_campaign,
    create_campaign,
    quota_status,
    tick,
)
from automail.campaigns.unsubscribe import verify_token
from automail.models import Campaign, CampaignCategory, CampaignEvent, Customer, Mail
from automail.sample_data import make_customer, make_order, make_shop

NOW = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)  # 10:00 in Tokyo


def _campaign(session: Session, shop, **kw) -> Campaign:  # noqa: ANN001
    args = {
        "shop_id": shop.id,
        "name": "夏のセール",
        "subject": "[TENPO_NAME] 夏のセールのお知らせ",
        "body": "[CUSTOMER_NAME] 様\nクーポン: <#クーポンURL>",
        "body_format": "text",
        "scheduled_at": NOW + timedelta(hours=2),
        "now": NOW,
    }
    args.update(kw)
    return create_campaign(session, **args)


def _mails(session: Session, campaign: Campaign) -> list[Mail]:
    return list(
        session.scalars(select(Mail).where(Mail.campaign_id == campaign.id).order_by(Mail.id))
    )


def _deliver(session: Session, mails: list[Mail], status: str = "sent", **kw) -> None:
    """What the sending machinery records for an SMTP outcome."""
    for mail in mails:
        mail.status = status
        mail.attempt_count = 1
        mail.sent_at = NOW if status == "sent" else None
        mail.next_attempt_at = None  # final unless a retry time is given
        for key, value in kw.items():
            setattr(mail, key, value)
    session.flush()


def _recipients(session: Session, campaign: Campaign) -> set[str]:
    return {m.to_address for m in _mails(session, campaign)}


# C1 ---------------------------------------------------------------------------------


def test_schedule_must_be_three_minutes_ahead(session: Session) -> None:
    shop = make_shop(session)
    with pytest.raises(CampaignRefused, match=r"scheduled_at: .* less than 3 minutes ahead"):
        _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=2, seconds=59))
    ok = _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=3))
    assert ok.status == "scheduled"
    settings.put(session, "campaign_min_lead_minutes", 10)
    with pytest.raises(CampaignRefused, match="campaign_min_lead_minutes=10"):
        _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=9))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subject", "  ", "subject: required"),
        ("body", "", "body: required"),
        ("body_format", "pdf", "body_format: 'pdf'"),
        ("audience_filter", {"prefecture": "東京都"}, "unknown key 'prefecture'"),
        ("audience_filter", {"min_purchases": -1}, "min_purchases: -1"),
        ("audience_filter", {"last_order_from": "2026-13-01"}, "last_order_from: '2026-13-01'"),
        ("scheduled_at", datetime(2026, 6, 10, 12, 0), "has no time zone"),
        ("body", "{% for %}", "template error"),
    ],
)
def test_bad_input_names_field_and_value(session: Session, field, value, message) -> None:  # noqa: ANN001
    shop = make_shop(session)
    with pytest.raises(ValueError, match=message):
        _campaign(session, shop, **{field: value})
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0


# C6 ---------------------------------------------------------------------------------


def test_cancel_until_thirty_minutes_before(session: Session) -> None:
    shop = make_shop(session)
    early = _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=31))
    late = _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=30))
    assert cancel_campaign(session, early.id, now=NOW, actor="staff").status == "cancelled"
    with pytest.raises(CampaignRefused, match=r"too late to cancel .* \(30 minutes before"):
        cancel_campaign(session, late.id, now=NOW)
    report = tick(session, NOW)
    assert late.status == "preparing" and early.status == "cancelled"
    assert (late.id, "scheduled", "preparing") in report.transitions
    with pytest.raises(CampaignRefused, match="status is 'preparing'"):
        cancel_campaign(session, late.id, now=NOW)
    assert _mails(session, early) == []  # a cancelled campaign never creates mails
    tick(session, NOW + timedelta(hours=3))
    assert early.status == "cancelled" and _mails(session, early) == []


# C3 / C4 ----------------------------------------------------------------------------


def test_filter_is_rerun_and_fixed_list_is_frozen(session: Session) -> None:
    shop = make_shop(session)
    stays = make_customer(session, shop, "stays@example.jp")
    opts_out = make_customer(session, shop, "optout@example.jp")
    moves = make_customer(session, shop, "moves@example.jp")
    make_customer(session, shop, "osaka@example.jp", prefecture="大阪府")
    flt = {"prefectures": ["東京都"]}
    by_filter = _campaign(session, shop, audience_filter=flt)
    fixed = _campaign(session, shop, audience_filter=flt, audience_mode="fixed")
    # After scheduling: one opts out, one moves away, one new Tokyo customer signs up.
    opts_out.marketing_opt_in = False
    moves.prefecture = "大阪府"
    make_customer(session, shop, "new@example.jp", signed_up_at=NOW - timedelta(hours=1))
    session.flush()
    tick(session, NOW + timedelta(hours=2))
    assert _recipients(session, by_filter) == {"stays@example.jp", "new@example.jp"}
    # Fixed: frozen membership (the mover still gets it, the newcomer does not), but an
    # opt-out is never overridden (C4 applies at send time in both modes).
    assert _recipients(session, fixed) == {"stays@example.jp", "moves@example.jp"}
    assert stays.id and by_filter.status == fixed.status == "sending"


def test_send_to_checked_only_mails_the_checked_customers(session: Session) -> None:
    shop = make_shop(session)
    a = make_customer(session, shop, "a@example.jp")
    make_customer(session, shop, "b@example.jp")
    outsider = make_customer(session, shop, "c@example.jp", prefecture="大阪府")
    flt = {"prefectures": ["東京都"]}
    with pytest.raises(ValueError, match=rf"checked customer ids \[{outsider.id}\]"):
        _campaign(
            session,
            shop,
            audience_filter=flt,
            audience_mode="fixed",
            send_to="checked",
            checked_customer_ids=[a.id, outsider.id],
        )
    with pytest.raises(ValueError, match="send_to: 'checked' needs audience_mode 'fixed'"):
        _campaign(session, shop, send_to="checked", checked_customer_ids=[a.id])
    c = _campaign(
        session,
        shop,
        audience_filter=flt,
        audience_mode="fixed",
        send_to="checked",
        checked_customer_ids=[a.id],
    )
    tick(session, NOW + timedelta(hours=2))
    assert _recipients(session, c) == {"a@example.jp"}


def test_eligibility_and_filter_criteria(session: Session) -> None:
    shop = make_shop(session)
    other = make_shop(session, "rice", "米蔵さとう")
    make_customer(session, shop, "ok@example.jp", coupon_code="SUMMER")
    make_customer(session, shop, "nocoupon@example.jp")
    make_customer(session, shop, "optout@example.jp", marketing_opt_in=False, coupon_code="X")
    make_customer(session, shop, "invalid@example.jp", address_valid=False, coupon_code="X")
    make_customer(session, shop, "cleaned@example.jp", address_cleaned=True, coupon_code="X")
    make_customer(session, shop, "unsub@example.jp", unsubscribed_at=NOW, coupon_code="X")
    make_customer(session, other, "othershop@example.jp", coupon_code="X")
    buyer = make_customer(session, shop, "buyer@example.jp")
    for i in range(3):
        make_order(
            session, buyer, NOW - timedelta(days=10 + i), number=f"B{i}", purchase_count=i + 1
        )
    c1 = _campaign(session, shop, audience_filter={"has_coupon": True})
    c2 = _campaign(
        session, shop, audience_filter={"min_purchases": 2, "last_order_from": "2026-05-25"}
    )
    c3 = _campaign(session, shop, audience_filter={"max_purchases": 0})
    c4 = _campaign(session, shop, audience_filter={"last_order_to": "2026-05-29"})
    tick(session, NOW + timedelta(hours=2))
    assert _recipients(session, c1) == {"ok@example.jp"}
    assert _recipients(session, c2) == {"buyer@example.jp"}
    assert _recipients(session, c3) == {"ok@example.jp", "nocoupon@example.jp"}
    assert _recipients(session, c4) == set()  # newest order is 2026-05-31
    assert c4.status == "failed" and "no recipients" in c4.status_reason


def test_same_address_twice_goes_to_newest_customer_only(session: Session) -> None:
    shop = make_shop(session)
    make_customer(
        session, shop, "Twin@Example.jp", name="古い", signed_up_at=NOW - timedelta(days=9)
    )
    newest = make_customer(
        session, shop, "twin@example.jp", name="新しい", signed_up_at=NOW - timedelta(days=1)
    )
    make_customer(session, shop, "solo@example.jp")
    deduped = _campaign(session, shop)
    both = _campaign(session, shop, dedupe_newest=False)
    settings.put(session, "campaign_dedupe_newest", False)
    default_off = _campaign(session, shop)
    assert deduped.dedupe_newest and not default_off.dedupe_newest
    tick(session, NOW + timedelta(hours=2))
    twin_mails = [m for m in _mails(session, deduped) if m.to_address.lower() == "twin@example.jp"]
    assert [m.customer_id for m in twin_mails] == [newest.id]
    assert "新しい 様" in twin_mails[0].body_text
    assert len(_mails(session, both)) == 3


def test_skip_customers_who_already_got_this_newsletter(session: Session) -> None:
    shop = make_shop(session)
    got_it = make_customer(session, shop, "got@example.jp")
    make_customer(session, shop, "new@example.jp")
    first = _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=40))
    tick(session, NOW + timedelta(minutes=40))
    _deliver(session, [m for m in _mails(session, first) if m.customer_id == got_it.id])
    # Same subject+body (+format, signature): "this newsletter" again.
    again = _campaign(session, shop, skip_already_received=True)
    different = _campaign(session, shop, skip_already_received=True, subject="別の件名")
    plain = _campaign(session, shop)
    tick(session, NOW + timedelta(hours=2))
    assert again.content_hash == first.content_hash != different.content_hash
    assert _recipients(session, again) == {"new@example.jp"}
    assert _recipients(session, different) == {"got@example.jp", "new@example.jp"}
    assert _recipients(session, plain) == {"got@example.jp", "new@example.jp"}


def test_content_is_taken_at_send_time(session: Session) -> None:
    shop = make_shop(session, coupon_url="https://tea.example.jp/coupon/SUMMER")
    make_customer(session, shop, "a@example.jp", name="佐藤 翔太")
    c = _campaign(session, shop)
    c.subject = "【改】[TENPO_NAME] 本日限り"
    c.body = "[CUSTOMER_NAME] 様 <#クーポンURL>"
    session.flush()
    tick(session, NOW + timedelta(hours=2))
    (mail,) = _mails(session, c)
    assert mail.subject == "【改】お茶の山田園 本日限り"
    assert mail.body_text.startswith("佐藤 翔太 様 https://tea.example.jp/coupon/SUMMER")


def test_every_newsletter_carries_a_signed_unsubscribe_link(session: Session) -> None:
    shop = make_shop(session)
    cust = make_customer(session, shop, "a@example.jp", name="<b>悪</b>")
    text = _campaign(session, shop)
    html = _campaign(
        session,
        shop,
        body_format="html",
        body="<p>[CUSTOMER_NAME] 様</p>",
        signature="お茶の山田園\nsupport",
    )
    tick(session, NOW + timedelta(hours=2))
    for c in (text, html):
        (mail,) = _mails(session, c)
        body = mail.body_text or mail.body_html
        header = mail.extra_headers["List-Unsubscribe"]
        url = header.split("<", 1)[1].split(">", 1)[0]
        assert url.startswith("http://localhost:8080/automail-public/unsubscribe?t=")
        assert url in body.replace("&amp;", "&")
        assert verify_token(url.split("t=", 1)[1]) == (shop.id, cust.id)
        assert "mailto:support@tea.example.jp" in header
        assert mail.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (html_mail,) = _mails(session, html)
    assert "&lt;b&gt;悪&lt;/b&gt; 様" in html_mail.body_html  # customer data escaped (F4)
    assert "お茶の山田園<br>" in html_mail.body_html


def test_audience_csv_lists_who_would_receive_it(session: Session) -> None:
    shop = make_shop(session)
    a = make_customer(session, shop, "a@example.jp", name="佐藤 翔太")
    make_order(session, a, NOW - timedelta(days=3))
    make_customer(session, shop, "b@example.jp", marketing_opt_in=False)
    c = _campaign(session, shop)
    lines = audience_csv(session, campaign_audience(session, c, "Asia/Tokyo")).splitlines()
    assert (
        lines[0]
        == "\ufeffcustomer_id,name,email,prefecture,purchase_count,last_order_at,signed_up_at,"
        "coupon_code"
    )
    assert len(lines) == 2 and lines[1].startswith(f"{a.id},佐藤 翔太,a@example.jp,東京都,1,")


# C7 ---------------------------------------------------------------------------------


def test_every_transition_is_recorded_with_counts(session: Session) -> None:
    shop = make_shop(session)
    for i in range(4):
        make_customer(session, shop, f"c{i}@example.jp")
    c = _campaign(session, shop)
    tick(session, NOW + timedelta(minutes=89))
    assert c.status == "scheduled"
    tick(session, NOW + timedelta(minutes=90))
    assert c.status == "preparing"
    tick(session, NOW + timedelta(minutes=119))
    assert c.status == "preparing" and _mails(session, c) == []
    tick(session, NOW + timedelta(minutes=120))
    assert c.status == "sending" and c.started_at == NOW + timedelta(minutes=120)
    assert (c.targets, c.succeeded, c.errors, c.unsent) == (4, 0, 0, 4)
    mails = _mails(session, c)
    assert all(
        m.due_at is not None and m.next_attempt_at <= NOW + timedelta(minutes=120) for m in mails
    )
    _deliver(session, mails[:2])
    _deliver(session, mails[2:3], status="error", last_error="550 5.1.1 no such user")
    tick(session, NOW + timedelta(minutes=125))
    assert c.status == "sending" and (c.targets, c.succeeded, c.errors, c.unsent) == (4, 2, 1, 1)
    _deliver(session, mails[3:])
    tick(session, NOW + timedelta(minutes=130))
    assert c.status == "counted"
    assert (c.targets, c.succeeded, c.errors, c.unsent) == (4, 3, 1, 0)
    events = session.execute(
        select(CampaignEvent.from_status, CampaignEvent.to_status)
        .where(CampaignEvent.campaign_id == c.id)
        .order_by(CampaignEvent.id)
    ).all()
    assert [tuple(e) for e in events] == [
        (None, "scheduled"),
        ("scheduled", "preparing"),
        ("preparing", "sending"),
        ("sending", "sent"),
        ("sent", "counting"),
        ("counting", "counted"),
    ]
    # A bounce that arrives days later turns a success into an error in the counts.
    mails[0].bounce_outcome = "hard"
    session.flush()
    tick(session, NOW + timedelta(days=2))
    assert (c.succeeded, c.errors) == (2, 2)


def test_no_recipients_means_failed(session: Session) -> None:
    shop = make_shop(session)
    make_customer(session, shop, "optout@example.jp", marketing_opt_in=False)
    c = _campaign(session, shop)
    tick(session, NOW + timedelta(hours=2))
    assert c.status == "failed" and "no recipients" in c.status_reason and c.targets == 0


def test_error_rate_above_threshold_stops_for_good(session: Session) -> None:
    shop = make_shop(session)
    for i in range(30):
        make_customer(session, shop, f"c{i:02d}@example.jp")
    settings.put(session, "campaign_stop_min_sends", 10)
    c = _campaign(session, shop)
    tick(session, NOW + timedelta(hours=2))
    mails = _mails(session, c)
    _deliver(session, mails[:8])
    _deliver(session, mails[8:9], status="error")  # 1/9 tried: too few tries to judge
    tick(session, NOW + timedelta(hours=2, minutes=5))
    assert c.status == "sending"
    _deliver(session, mails[9:10], status="error")  # 2/10 = 20% > 10% after 10 tries
    # Waiting for a retry (the sender keeps it in error with next_attempt_at): no retry.
    _deliver(session, mails[10:11], status="error", next_attempt_at=NOW + timedelta(hours=3))
    # Being sent right now (claimed, lease alive): left alone to finish.
    mails[11].claimed_by, mails[11].lease_until = "worker-1", NOW + timedelta(hours=3)
    session.flush()
    tick(session, NOW + timedelta(hours=2, minutes=10))
    # 2 refused + 1 waiting for a retry, out of 11 tried
    assert c.status == "stopped" and "error rate 27.3% (3/11 tried)" in c.status_reason
    statuses = [m.status for m in _mails(session, c)]
    assert statuses.count("cancelled") == 18 and statuses[11] == "unsent"
    assert statuses[10] == "error" and mails[10].next_attempt_at is None
    cancelled = [m for m in _mails(session, c) if m.status == "cancelled"]
    assert all("campaign_stop_error_rate" in m.last_error for m in cancelled)
    assert (c.targets, c.succeeded, c.errors, c.unsent) == (30, 8, 3, 19)
    tick(session, NOW + timedelta(days=1))  # never restarted
    assert c.status == "stopped"
    assert sum(m.status == "cancelled" for m in _mails(session, c)) == 18


# C8 ---------------------------------------------------------------------------------


def test_sending_only_inside_the_allowed_hours(session: Session) -> None:
    shop = make_shop(session)
    for i in range(3):
        make_customer(session, shop, f"c{i}@example.jp")
    daytime = CampaignCategory(name="daytime", allowed_from_hour=9, allowed_to_hour=20)
    session.add(daytime)
    session.flush()
    evening = datetime(2026, 6, 10, 11, 30, tzinfo=UTC)  # 20:30 JST
    c = _campaign(session, shop, category_id=daytime.id, scheduled_at=evening)
    tick(session, evening)
    assert c.status == "sending"  # the campaign starts; its mails wait
    opens = datetime(2026, 6, 11, 0, 0, tzinfo=UTC)  # 09:00 JST next morning
    for mail in _mails(session, c):
        assert mail.due_at is None and mail.next_attempt_at == opens
        assert "outside allowed hours 09:00–20:00 Asia/Tokyo" in mail.last_error
    tick(session, opens - timedelta(minutes=1))
    assert all(m.due_at is None for m in _mails(session, c))
    tick(session, opens)
    assert all(m.due_at == opens and m.next_attempt_at == opens for m in _mails(session, c))
    assert all(m.last_error is None for m in _mails(session, c))


# C9 ---------------------------------------------------------------------------------


def test_monthly_quota_boundary(session: Session) -> None:
    shop = make_shop(session, monthly_quota=5)
    for i in range(4):
        make_customer(session, shop, f"c{i}@example.jp")
    buyer = make_customer(session, shop, "buyer@example.jp", marketing_opt_in=False)
    order = make_order(session, buyer, NOW)
    session.add(
        Mail(
            shop_id=shop.id,
            kind="order_confirmation",
            source_key=f"order:{order.id}",
            status="sent",
            to_address=buyer.email,
            from_address=shop.from_address,
            due_at=NOW,
            sent_at=NOW,
        )
    )  # transactional: never counts
    first = _campaign(session, shop, scheduled_at=NOW + timedelta(minutes=40))
    tick(session, NOW + timedelta(minutes=40))
    assert tuple(quota_status(session, shop.id, NOW)) == (4, 5, 1)
    _deliver(session, _mails(session, first)[:1], bounce_outcome="hard")  # bounced: counts
    _deliver(session, _mails(session, first)[1:])
    second = _campaign(session, shop)
    tick(session, NOW + timedelta(hours=2))
    released = [m for m in _mails(session, second) if m.due_at is not None]
    held = [m for m in _mails(session, second) if m.due_at is None]
    assert len(released) == 1 and len(held) == 3
    assert tuple(quota_status(session, shop.id, "2026-06")) == (5, 5, 0)
    july = datetime(2026, 6, 30, 15, 0, tzinfo=UTC)  # 2026-07-01 00:00 JST
    for mail in held:
        assert mail.status == "unsent" and mail.next_attempt_at == july
        assert mail.last_error.startswith("monthly quota of shop tea reached: 5/5")
    tick(session, NOW + timedelta(hours=3))  # still June: nothing more goes
    assert sum(m.due_at is not None for m in _mails(session, second)) == 1
    tick(session, july)
    assert all(m.due_at is not None for m in _mails(session, second))
    assert tuple(quota_status(session, shop.id, "2026-07")) == (3, 5, 2)
    assert tuple(quota_status(session, shop.id, "2026-06")) == (5, 5, 0)
    unlimited = make_shop(session, "kitchen", "台所道具の田中商店")
    assert tuple(quota_status(session, unlimited.id, "2026-06")) == (0, None, None)
    with pytest.raises(ValueError, match="month: '2026-6x' is not YYYY-MM"):
        quota_status(session, shop.id, "2026-6x")


def test_two_ticks_never_create_a_second_mail(session: Session) -> None:
    shop = make_shop(session)
    make_customer(session, shop, "a@example.jp")
    c = _campaign(session, shop)
    tick(session, NOW + timedelta(hours=2))
    # Force the campaign back to preparing: the creation step itself must be idempotent.
    session.execute(update(Campaign).where(Campaign.id == c.id).values(status="preparing"))
    session.expire_all()
    tick(session, NOW + timedelta(hours=2, minutes=5))
    assert session.scalar(select(func.count()).select_from(Mail)) == 1
    assert session.scalar(select(func.count()).select_from(Customer)) == 1
