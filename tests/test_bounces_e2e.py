"""End to end (SPEC E1–E3) with the real sender and the aiosmtpd sink on loopback:
an address the server refuses with 550 5.1.1 → the mail is an error, the address is
cleaned, and the next newsletter leaves that customer out; and the delayed path, where
the server accepts and a DSN comes back later through the bounce mailbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bounce_helpers import dsn, new_mail
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from automail.bounce_links import MailSigner
from automail.bounces.ingest import ingest_mailbox
from automail.bounces.mailbox import FolderSource
from automail.campaigns import campaign_audience, create_campaign, tick
from automail.db import session_factory
from automail.models import Customer, Mail, SendAttempt
from automail.sample_data import make_customer, make_shop
from automail.sending import SmtpConfig, run_send_cycle
from automail.smtp_sink import SmtpSink

REJECT = "550 5.1.1 <x@example.jp>: Recipient address rejected: User unknown"


def _fresh(session: Session) -> None:
    session.commit()
    session.expire_all()


def _newsletter(session: Session, shop, now: datetime):  # noqa: ANN001, ANN202
    return create_campaign(
        session,
        shop_id=shop.id,
        name="新茶のご案内",
        subject="[TENPO_NAME] 新茶入荷",
        body="[CUSTOMER_NAME] 様\n新茶が入荷しました。",
        body_format="text",
        scheduled_at=now + timedelta(minutes=10),
        now=now,
    )


def test_refused_address_is_cleaned_and_left_out_of_the_next_newsletter(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    smtp_sink.handler.reject["x@example.jp"] = REJECT
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=5)
    sf = session_factory(engine)
    shop = make_shop(session, return_path="bounce@tea.example.jp")
    x = make_customer(session, shop, "x@example.jp", name="宛先 不明")
    ok = make_customer(session, shop, "ok@example.jp", name="山田 花子")
    refused = new_mail(session, shop, x.email, x.id)
    accepted = new_mail(session, shop, ok.email, ok.id)
    session.commit()

    summary = run_send_cycle(sf, cfg, "e2e-orders")

    assert (summary.sent, summary.failed) == (1, 1)
    _fresh(session)
    assert session.get(Mail, refused.id).status == "error"
    assert session.get(Mail, accepted.id).status == "sent"
    attempt = session.scalars(select(SendAttempt).where(SendAttempt.mail_id == refused.id)).one()
    assert (attempt.outcome, attempt.smtp_code, attempt.enhanced_code) == (
        "perm_fail",
        550,
        "5.1.1",
    )
    cx, cok = session.get(Customer, x.id), session.get(Customer, ok.id)
    assert cx.address_cleaned is True and "5.1.1" in cx.address_reason
    assert cok.address_cleaned is False

    # The next newsletter: its audience leaves the cleaned address out, and so does sending.
    now = datetime.now(UTC).replace(microsecond=0)
    campaign = _newsletter(session, shop, now)
    session.commit()
    assert set(session.scalars(campaign_audience(session, campaign, "Asia/Tokyo"))) == {ok.id}
    due = campaign.scheduled_at + timedelta(minutes=1)
    tick(session, due)
    session.commit()
    before = len(smtp_sink.messages)
    run_send_cycle(sf, cfg, "e2e-newsletter", now=due)
    _fresh(session)
    newsletters = session.scalars(select(Mail).where(Mail.campaign_id == campaign.id)).all()
    assert [(m.to_address, m.status) for m in newsletters] == [("ok@example.jp", "sent")]
    assert [m.rcpt_tos for m in smtp_sink.messages[before:]] == [["ok@example.jp"]]


def test_accepted_then_bounced_later_through_the_mailbox(
    engine: Engine, session: Session, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=5)
    sf = session_factory(engine)
    shop = make_shop(session, return_path="bounce@tea.example.jp")
    x = make_customer(session, shop, "x@example.jp")
    mail = new_mail(session, shop, x.email, x.id)
    session.commit()
    run_send_cycle(sf, cfg, "e2e-accepted")
    captured = smtp_sink.messages[-1]
    # Bounces come back to the mailbox, at the mail's own signed return path.
    token = MailSigner().token(shop.id, mail.id)
    assert captured.mail_from == f"bounce+{mail.id}-{token}@tea.example.jp"
    box = tmp_path / "mailbox"
    box.mkdir()
    (box / "dsn.eml").write_bytes(dsn(captured.data, "x@example.jp"))  # to its Return-Path

    summary = ingest_mailbox(sf, FolderSource(box))

    assert (summary.matched, summary.hard, summary.applied) == (1, 1, 1)
    _fresh(session)
    m = session.get(Mail, mail.id)
    assert (m.status, m.bounce_outcome) == ("sent", "hard")
    assert session.get(Customer, x.id).address_cleaned is True
    now = datetime.now(UTC).replace(microsecond=0)
    campaign = _newsletter(session, shop, now)
    session.commit()
    assert set(session.scalars(campaign_audience(session, campaign, "Asia/Tokyo"))) == set()
