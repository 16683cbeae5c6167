"""Step mails (D1, D2) on both stores: exact offsets, once per customer, backfill-safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.models import Mail
from automail.sample_data import make_customer, make_order, make_shop
from automail.steps import add_step, create_due_step_mails, create_sequence, parse_offset

T0 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def _step_mails(session: Session) -> list[tuple[str, str, datetime]]:
    rows = session.execute(
        select(Mail.source_key, Mail.to_address, Mail.due_at)
        .where(Mail.kind == "step")
        .order_by(Mail.id)
    ).all()
    return [tuple(r) for r in rows]


def test_offsets_parse_days_hours_minutes() -> None:
    assert parse_offset("1d2h30m") == 1590
    assert parse_offset("45m") == 45 and parse_offset("2H") == 120 and parse_offset(7) == 7
    for bad in ("", "1x", "-5", "d"):
        with pytest.raises(ValueError, match="offset: "):
            parse_offset(bad)


def test_step_is_due_exactly_at_start_plus_offset(session: Session) -> None:
    shop = make_shop(session)
    seq = create_sequence(session, shop_id=shop.id, name="welcome", start_event="signup", now=T0)
    s1 = add_step(
        session,
        seq.id,
        offset="1h30m",
        subject="[TENPO_NAME]へようこそ",
        body_text="[CUSTOMER_NAME] 様",
    )
    signed = T0 + timedelta(minutes=10)
    cust = make_customer(session, shop, "new@example.jp", name="佐藤 翔太", signed_up_at=signed)
    due = signed + timedelta(minutes=90)
    assert create_due_step_mails(session, until=due - timedelta(minutes=1)).created == 0
    assert create_due_step_mails(session, until=due).created == 1
    (mail,) = session.scalars(select(Mail).where(Mail.kind == "step"))
    assert mail.source_key == f"step:{s1.id}:customer:{cust.id}"
    assert mail.due_at == due and mail.next_attempt_at == due and mail.status == "unsent"
    assert mail.subject == "お茶の山田園へようこそ" and mail.body_text.startswith("佐藤 翔太 様")
    assert "automail-public/unsubscribe?t=" in mail.body_text
    assert mail.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_reruns_and_backfill_never_duplicate(session: Session) -> None:
    shop = make_shop(session)
    seq = create_sequence(session, shop_id=shop.id, name="welcome", start_event="signup", now=T0)
    s1 = add_step(session, seq.id, offset="1d", subject="1日後", body_text="a")
    s2 = add_step(session, seq.id, offset="3d", subject="3日後", body_text="b")
    for i in range(3):
        make_customer(session, shop, f"c{i}@example.jp", signed_up_at=T0 + timedelta(hours=i))
    # Runs every 10 minutes over five days, then a backfill over old intervals, then reruns.
    run_ends = [T0 + timedelta(minutes=10 * k) for k in range(1, 5 * 144 + 1)]
    day2 = T0 + timedelta(days=2)
    assert create_due_step_mails(session, until=day2).created == 3  # all of step 1
    for end in run_ends[::37] + run_ends[:20] + run_ends[::9]:
        create_due_step_mails(session, until=end)
    keys = [k for k, _, _ in _step_mails(session)]
    assert len(keys) == len(set(keys)) == 6
    assert {k.split(":")[1] for k in keys} == {str(s1.id), str(s2.id)}
    assert create_due_step_mails(session, until=T0 + timedelta(days=30)).created == 0


def test_backfill_of_an_old_interval_creates_only_what_was_due_then(session: Session) -> None:
    shop = make_shop(session)
    seq = create_sequence(session, shop_id=shop.id, name="w", start_event="signup", now=T0)
    add_step(session, seq.id, offset="1d", subject="1日後", body_text="a")
    add_step(session, seq.id, offset="3d", subject="3日後", body_text="b")
    make_customer(session, shop, "a@example.jp", signed_up_at=T0 + timedelta(hours=1))
    report = create_due_step_mails(session, until=T0 + timedelta(days=1, hours=1))
    assert report.created == 1 and _step_mails(session)[0][2] == T0 + timedelta(days=1, hours=1)


def test_first_order_start_filter_and_unsubscribe(session: Session) -> None:
    shop = make_shop(session)
    seq = create_sequence(
        session,
        shop_id=shop.id,
        name="after first order",
        start_event="first_order",
        audience_filter={"prefectures": ["東京都"]},
        now=T0,
    )
    add_step(session, seq.id, offset="2d", subject="ご購入ありがとうございました", body_text="x")
    add_step(session, seq.id, offset="7d", subject="レビューのお願い", body_text="y")
    before = {"signed_up_at": T0 - timedelta(days=10)}  # customers who existed before buying
    buyer = make_customer(session, shop, "buyer@example.jp", **before)
    mover = make_customer(session, shop, "mover@example.jp", **before)
    leaver = make_customer(session, shop, "leaver@example.jp", **before)
    old_buyer = make_customer(session, shop, "old@example.jp", **before)
    make_customer(session, shop, "nobuy@example.jp", **before)
    make_order(session, old_buyer, T0 - timedelta(days=1), number="O0")  # before the sequence
    make_order(session, old_buyer, T0 + timedelta(hours=1), number="O0b")  # not a first order
    for c in (buyer, mover, leaver):
        make_order(session, c, T0 + timedelta(hours=5), number=f"F{c.id}")
        make_order(session, c, T0 + timedelta(days=1), number=f"S{c.id}", purchase_count=2)
    create_due_step_mails(session, until=T0 + timedelta(days=3))
    assert {a for _, a, _ in _step_mails(session)} == {
        "buyer@example.jp",
        "mover@example.jp",
        "leaver@example.jp",
    }
    assert {d for _, _, d in _step_mails(session)} == {T0 + timedelta(days=2, hours=5)}
    mover.prefecture = "大阪府"  # no longer matches the filter
    leaver.marketing_opt_in = False  # unsubscribed
    session.flush()
    create_due_step_mails(session, until=T0 + timedelta(days=10))
    later = [a for k, a, _ in _step_mails(session) if k.startswith(f"step:{seq.steps[1].id}:")]
    assert later == ["buyer@example.jp"]


def test_bad_sequence_input_is_named(session: Session) -> None:
    shop = make_shop(session)
    with pytest.raises(ValueError, match="start_event: 'birthday'"):
        create_sequence(session, shop_id=shop.id, name="x", start_event="birthday")
    seq = create_sequence(session, shop_id=shop.id, name="x", start_event="signup")
    with pytest.raises(ValueError, match="body: one of body_text or body_html"):
        add_step(session, seq.id, offset="1d", subject="s")
    with pytest.raises(LookupError, match="sequence_id: no step sequence 999"):
        add_step(session, 999, offset="1d", subject="s", body_text="b")
