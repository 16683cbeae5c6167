"""Bounce ingestion on both stores (SPEC E1–E3): delayed bounces after a real send to the
SMTP sink, matching, idempotency, unmatched and auto-reply rows, address health."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime

import pytest
from bounce_helpers import FIXTURES, bare_bounce, dsn, new_mail, send
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from automail.bounce_links import MailSigner
from automail.bounces.ingest import ingest_message, ingest_raw
from automail.cli import main
from automail.db import session_factory
from automail.management.detail import get_detail
from automail.models import Bounce, Customer, Mail, MailEvent
from automail.sample_data import make_customer, make_shop
from automail.sending import SmtpConfig, run_send_cycle
from automail.signing import MissingSecretKey
from automail.smtp_sink import SmtpSink

SOFT = "452 4.2.2 <{r}>: Mailbox full"


def _fresh(session: Session) -> None:
    session.commit()  # end the read snapshot (SQLite WAL) so other sessions' commits show
    session.expire_all()


def _setup(session: Session, address: str = "hanako@example.jp"):  # noqa: ANN202
    shop = make_shop(session, return_path="bounce@tea.example.jp")
    customer = make_customer(session, shop, address)
    session.commit()
    return shop, customer


def _sent_mail(engine: Engine, session: Session, sink: SmtpSink, shop, customer) -> tuple:  # noqa: ANN001
    mail = new_mail(session, shop, customer.email, customer.id)
    session.commit()
    data = send(engine, sink, mail.id)
    _fresh(session)
    assert session.get(Mail, mail.id).status == "sent"
    session.commit()  # no read snapshot left open while other sessions write
    return mail.id, data


def _ingest(engine: Engine, raw: bytes, source: str = "test", session: Session | None = None):  # noqa: ANN202
    if session is not None:
        session.commit()  # SQLite: a read snapshot left open would block its next write
    return ingest_raw(session_factory(engine), raw, source)


def test_delayed_hard_bounce_after_sent_flips_result_and_cleans_address(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop, customer = _setup(session)
    mail_id, data = _sent_mail(engine, session, smtp_sink, shop, customer)
    # The envelope sender is the shop's return path, made per mail and signed, so the
    # bounce comes back to the mailbox and names the mail unforgeably.
    token = MailSigner().token(shop.id, mail_id)
    verp = f"bounce+{mail_id}-{token}@tea.example.jp"
    assert smtp_sink.messages[-1].mail_from == verp
    assert data.startswith(f"Return-Path: <{verp}>\r\n".encode())
    assert f"Message-ID: <automail.{mail_id}-{token}.".encode() in data

    summary = _ingest(engine, dsn(data, "hanako@example.jp"))

    assert (summary.ingested, summary.matched, summary.hard, summary.applied) == (1, 1, 1, 1)
    _fresh(session)
    mail = session.get(Mail, mail_id)
    assert mail.status == "sent"  # B10: accepted by the server; the bounce is its result
    assert mail.bounce_outcome == "hard"
    event = session.scalars(
        select(MailEvent).where(MailEvent.mail_id == mail_id, MailEvent.event == "bounced")
    ).one()
    assert "550" in event.detail and "5.1.1" in event.detail and "userunknown" in event.detail
    assert (event.from_status, event.to_status) == ("sent", "sent")
    row = session.scalars(select(Bounce)).one()
    assert (row.mail_id, row.matched_by, row.trust, row.effect) == (
        mail_id,
        "verp",
        "signed",
        "applied",
    )
    assert (row.smtp_code, row.enhanced_code, row.reason) == (550, "5.1.1", "userunknown")
    c = session.get(Customer, customer.id)
    assert c.address_cleaned is True and c.address_valid is True
    assert c.consecutive_failures == 1
    assert "userunknown" in c.address_reason
    # "what happened to mail X": the detail (screen and `automail mails show`) has it
    bounced = get_detail(session, mail_id).bounces
    assert [(b.outcome, b.smtp_code, b.enhanced_code, b.reason, b.effect) for b in bounced] == [
        ("hard", 550, "5.1.1", "userunknown", "applied")
    ]


def test_soft_bounce_counts_a_failure_without_cleaning(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop, customer = _setup(session)
    mail_id, data = _sent_mail(engine, session, smtp_sink, shop, customer)

    summary = _ingest(engine, dsn(data, customer.email, "4.2.2", SOFT))

    assert (summary.soft, summary.hard) == (1, 0)
    _fresh(session)
    assert session.get(Mail, mail_id).bounce_outcome == "soft"
    c = session.get(Customer, customer.id)
    assert (c.address_cleaned, c.address_valid, c.consecutive_failures) == (False, True, 1)


def test_three_delayed_failures_in_a_row_invalidate_although_each_send_was_accepted(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    """Accepted, bounced, accepted, bounced...: the acceptances reset the sender's count,
    yet three mails in a row failed, so the address becomes invalid."""
    shop, customer = _setup(session)
    for n in range(1, 4):
        _, data = _sent_mail(engine, session, smtp_sink, shop, customer)
        _ingest(engine, dsn(data, customer.email, "4.2.2", SOFT), session=session)
        _fresh(session)
        c = session.get(Customer, customer.id)
        assert c.consecutive_failures == n
        assert c.address_valid is (n < 3)
    assert "3 consecutive failures" in c.address_reason
    assert c.address_cleaned is False  # mailbox full is not a wrong address


def test_a_success_resets_the_count(engine: Engine, session: Session, smtp_sink: SmtpSink) -> None:
    shop, customer = _setup(session)
    for _ in range(2):
        _, data = _sent_mail(engine, session, smtp_sink, shop, customer)
        _ingest(engine, dsn(data, customer.email, "4.2.2", SOFT), session=session)
    _fresh(session)
    assert session.get(Customer, customer.id).consecutive_failures == 2

    _sent_mail(engine, session, smtp_sink, shop, customer)  # accepted, never bounces
    _fresh(session)
    assert session.get(Customer, customer.id).consecutive_failures == 0
    _, data = _sent_mail(engine, session, smtp_sink, shop, customer)
    _ingest(engine, dsn(data, customer.email, "4.2.2", SOFT))

    _fresh(session)
    c = session.get(Customer, customer.id)
    assert (c.consecutive_failures, c.address_valid) == (1, True)


def test_reingesting_the_same_message_changes_nothing(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop, customer = _setup(session)
    mail_id, data = _sent_mail(engine, session, smtp_sink, shop, customer)
    raw = dsn(data, customer.email, "4.2.2", SOFT)
    first = _ingest(engine, raw)
    _fresh(session)
    state = (
        session.scalar(select(func.count()).select_from(Bounce)),
        session.scalar(select(func.count()).select_from(MailEvent)),
        session.get(Customer, customer.id).consecutive_failures,
    )

    again = _ingest(engine, raw, source="another copy")

    assert (first.ingested, again.ingested, again.duplicates, again.soft) == (1, 0, 1, 0)
    _fresh(session)
    assert (
        state
        == (
            session.scalar(select(func.count()).select_from(Bounce)),
            session.scalar(select(func.count()).select_from(MailEvent)),
            session.get(Customer, customer.id).consecutive_failures,
        )
        == (1, state[1], 1)
    )


def test_a_second_bounce_for_the_same_mail_counts_once_and_hard_wins(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop, customer = _setup(session)
    mail_id, data = _sent_mail(engine, session, smtp_sink, shop, customer)
    _ingest(engine, dsn(data, customer.email, "4.2.2", SOFT))
    summary = _ingest(engine, dsn(data, customer.email))  # a later, final hard bounce

    assert summary.applied == 1
    _fresh(session)
    assert session.get(Mail, mail_id).bounce_outcome == "hard"
    c = session.get(Customer, customer.id)
    assert (c.consecutive_failures, c.address_cleaned) == (1, True)
    events = session.scalars(
        select(MailEvent.detail).where(MailEvent.mail_id == mail_id, MailEvent.event == "bounced")
    ).all()
    assert len(events) == 2


def test_unmatched_bounce_is_kept_and_reported(engine: Engine, session: Session) -> None:
    raw = (FIXTURES / "postfix-userunknown.eml").read_bytes()

    summary = _ingest(engine, raw, source="postfix-userunknown.eml")

    assert (summary.ingested, summary.unmatched, summary.matched, summary.hard) == (1, 1, 0, 1)
    _fresh(session)
    row = session.get(Bounce, summary.unmatched_ids[0])
    assert row.mail_id is None and row.matched_by is None and row.trust is None
    assert (row.recipient, row.outcome, row.enhanced_code) == (
        "hanako.yamada@mail.example.net",
        "hard",
        "5.1.1",
    )
    assert row.original_message_id == "mail-101.65f3@automail.local"
    assert row.source == "postfix-userunknown.eml"


def test_unsigned_links_by_message_id_and_recipient_are_recorded_not_applied(
    engine: Engine, session: Session
) -> None:
    """A Message-ID without our token and the recipient fallback still link a bounce to
    its mail for the record, but anyone could have written them: nothing changes."""
    shop = make_shop(session)
    hanako = make_customer(session, shop, "hanako.yamada@mail.example.net")
    hikari = make_customer(session, shop, "hikari-0805@au.com")
    now = datetime.now(UTC)
    by_id = new_mail(
        session,
        shop,
        hanako.email,
        hanako.id,
        status="sent",
        sent_at=now,
        message_id="<mail-101.65f3@automail.local>",
    )
    older = new_mail(
        session,
        shop,
        hikari.email,
        hikari.id,
        status="sent",
        sent_at=now.replace(year=now.year - 1),
    )  # outside bounce_fallback_days
    newest = new_mail(session, shop, hikari.email, hikari.id, status="sent", sent_at=now)
    session.commit()

    a = _ingest(engine, (FIXTURES / "postfix-userunknown.eml").read_bytes())
    b = _ingest(engine, (FIXTURES / "au-userunknown-iso2022jp.eml").read_bytes())

    assert (a.matched, b.matched, a.untrusted, b.untrusted, a.applied, b.applied) == (
        1,
        1,
        1,
        1,
        0,
        0,
    )
    _fresh(session)
    rows = {r.mail_id: (r.matched_by, r.trust, r.effect) for r in session.scalars(select(Bounce))}
    assert rows == {
        by_id.id: ("message-id", "unsigned", "untrusted"),
        newest.id: ("recipient", "unsigned", "untrusted"),
    }
    for mail in (by_id, older, newest):
        assert session.get(Mail, mail.id).bounce_outcome is None
    for c in (hanako, hikari):
        c = session.get(Customer, c.id)
        assert (c.address_cleaned, c.consecutive_failures) == (False, 0)
    shown = get_detail(session, newest.id).bounces
    assert [b.effect_text for b in shown] == ["recorded, not applied: unsigned"]


def test_match_by_signed_verp_return_path(engine: Engine, session: Session) -> None:
    """A headerless bounce tells its mail only by the address it came back to: the
    signed return path applies, the old unsigned `+automail-<id>` form is only recorded."""
    shop, customer = _setup(session)
    mail = new_mail(session, shop, customer.email, customer.id, status="sent")
    mail.sent_at = datetime.now(UTC)
    other = new_mail(session, shop, customer.email, customer.id, status="sent")
    other.sent_at = datetime.now(UTC)  # newer: the recipient fallback would pick this one
    session.commit()
    signer = MailSigner()
    envelope = signer.return_path("bounce@tea.example.jp", shop.id, mail.id)
    assert envelope == f"bounce+{mail.id}-{signer.token(shop.id, mail.id)}@tea.example.jp"

    unsigned = _ingest(engine, bare_bounce(customer.email, f"bounce+automail-{other.id}@x.jp"))
    applied = _ingest(engine, bare_bounce(customer.email, envelope.upper()))  # case-proof

    assert (unsigned.untrusted, unsigned.applied, applied.applied) == (1, 0, 1)
    _fresh(session)
    rows = {r.mail_id: (r.matched_by, r.trust, r.effect) for r in session.scalars(select(Bounce))}
    assert rows == {
        other.id: ("verp", "unsigned", "untrusted"),
        mail.id: ("verp", "signed", "applied"),
    }
    assert session.get(Mail, other.id).bounce_outcome is None
    assert session.get(Mail, mail.id).bounce_outcome == "hard"


def test_bounce_of_a_bcc_recipient_changes_nothing(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop, customer = _setup(session)
    shop.bcc = "archive@tea.example.jp"
    session.commit()
    mail_id, data = _sent_mail(engine, session, smtp_sink, shop, customer)

    _ingest(engine, dsn(data, "archive@tea.example.jp"))

    _fresh(session)
    row = session.scalars(select(Bounce)).one()
    assert (row.mail_id, row.effect) == (mail_id, "other_recipient")
    assert session.get(Mail, mail_id).bounce_outcome is None
    c = session.get(Customer, customer.id)
    assert (c.address_cleaned, c.consecutive_failures) == (False, 0)


def test_bounce_for_a_mail_that_failed_at_once_is_recorded_not_counted_twice(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop, customer = _setup(session)
    smtp_sink.handler.reject[customer.email] = "550 5.1.1 <hanako@example.jp>: User unknown"
    mail = new_mail(session, shop, customer.email, customer.id)
    session.commit()
    send(engine, smtp_sink, mail.id)
    _fresh(session)
    assert session.get(Mail, mail.id).status == "error"
    assert session.get(Customer, customer.id).consecutive_failures == 1
    message_id = session.get(Mail, mail.id).message_id  # set by the sender, signed
    headers = (
        f"From: {shop.from_address}\r\nTo: {customer.email}\r\nMessage-ID: {message_id}\r\n\r\n"
    ).encode()

    _ingest(engine, dsn(headers, customer.email))

    _fresh(session)
    row = session.scalars(select(Bounce)).one()
    assert (row.matched_by, row.trust, row.effect) == ("message-id", "signed", "recorded")
    assert session.get(Mail, mail.id).status == "error"
    assert session.get(Customer, customer.id).consecutive_failures == 1


def test_auto_replies_and_reports_never_count(engine: Engine, session: Session) -> None:
    shop = make_shop(session)
    now = datetime.now(UTC)
    watched = {}
    for name, address, message_id in (
        ("vacation-en.eml", "haruka.mori@company.example", "mail-135.87f3@automail.local"),
        ("arf-abuse.eml", "nagisa@mailbox.example", "mail-139.8bf3@automail.local"),
        ("ses-json-complaint.eml", "mio@ses-dest.example", "mail-126.7ef3@automail.local"),
        ("postfix-delivered.eml", "shiro@partner.example.com", "mail-105.69f3@automail.local"),
    ):
        c = make_customer(session, shop, address)
        m = new_mail(
            session, shop, address, c.id, status="sent", sent_at=now, message_id=f"<{message_id}>"
        )
        watched[name] = (c.id, m.id)
    session.commit()

    for name in watched:
        summary = ingest_message(session, (FIXTURES / name).read_bytes(), name)
        session.commit()
        assert (summary.ingested, summary.hard, summary.soft, summary.ignored) == (1, 0, 0, 1)
        assert summary.applied == 0

    _fresh(session)
    for name, (customer_id, mail_id) in watched.items():
        c = session.get(Customer, customer_id)
        assert (c.address_cleaned, c.address_valid, c.consecutive_failures) == (False, True, 0)
        assert session.get(Mail, mail_id).bounce_outcome is None, name
        row = session.scalars(select(Bounce).where(Bounce.source == name)).one()
        assert (row.outcome, row.effect) == ("none", "ignored")
    matched = session.scalars(select(Bounce.mail_id).where(Bounce.mail_id.is_not(None))).all()
    assert len(matched) >= 3  # kept for the record, linked to their mail where possible
    assert session.scalar(select(func.count()).select_from(MailEvent)) == 0


def test_the_whole_fixture_corpus_is_recorded_once_per_recipient(
    engine: Engine, session: Session
) -> None:
    with (FIXTURES / "expected.csv").open(encoding="utf-8") as fh:
        expected = list(csv.DictReader(fh))
    files = sorted(FIXTURES.glob("*.eml"))

    total = Counter()
    for path in files:
        s = ingest_message(session, path.read_bytes(), path.name)
        total.update({"ingested": s.ingested, "hard": s.hard, "soft": s.soft, "none": s.ignored})
    session.commit()
    again = Counter()
    for path in files:
        again.update({"duplicates": ingest_message(session, path.read_bytes()).duplicates})

    outcomes = Counter(row["outcome"] for row in expected)
    assert total["ingested"] == len(expected) == again["duplicates"]
    assert (total["hard"], total["soft"], total["none"]) == (
        outcomes["hard"],
        outcomes["soft"],
        outcomes["none"],
    )
    rows = session.scalars(select(Bounce)).all()
    assert {(r.source, r.recipient, r.outcome) for r in rows} == {
        (row["file"], row["recipient"], row["outcome"]) for row in expected
    }


def test_issue12_forged_bounces_change_nothing_and_are_listed_as_not_applied(
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 12 item 1 as filed: X-Automail-Id with no recipient, a Message-ID of any
    domain, a DSN naming only the victim. Each is recorded and shown, none applies; the
    real bounce, to the mail's signed return path, still does."""
    shop, customer = _setup(session)
    mail_id, data = _sent_mail(engine, session, smtp_sink, shop, customer)
    forged = [
        f"From: MAILER-DAEMON@evil.example\r\nTo: {shop.return_path}\r\n"
        "Subject: Undelivered Mail\r\n\r\n"
        f"550 5.1.1 user unknown\r\n\r\nX-Automail-Id: {mail_id}\r\n".encode(),
        dsn(
            f"Message-ID: <automail.{mail_id}.x@evil.example>\r\n\r\n".encode(),
            customer.email,
            to=shop.return_path,
        ),
        dsn(b"", customer.email, to=shop.return_path),
    ]
    for raw in forged:
        summary = _ingest(engine, raw, "forged")
        assert (summary.ingested, summary.applied) == (1, 0)

    _fresh(session)
    c = session.get(Customer, customer.id)
    assert (c.address_cleaned, c.address_valid, c.consecutive_failures) == (False, True, 0)
    assert session.get(Mail, mail_id).bounce_outcome is None
    rows = session.scalars(select(Bounce).order_by(Bounce.id)).all()
    assert [(r.mail_id, r.trust, r.effect) for r in rows] == [
        (mail_id, "unsigned", "untrusted"),
        (mail_id, "unsigned", "untrusted"),
        (mail_id, "unsigned", "untrusted"),
    ]
    assert [r.matched_by for r in rows] == ["x-automail-id", "message-id", "recipient"]
    session.commit()
    assert main(["bounces", "list", "--mail", str(mail_id)]) == 0
    listed = capsys.readouterr().out
    assert listed.count("recorded, not applied: unsigned") == 3
    assert main(["mails", "show", str(mail_id)]) == 0
    assert "unsigned: recorded, not applied: unsigned" in capsys.readouterr().out

    real = _ingest(engine, dsn(data, customer.email))  # to the Return-Path the sink recorded

    assert real.applied == 1
    _fresh(session)
    assert session.get(Customer, customer.id).address_cleaned is True


def test_sending_without_a_signing_key_claims_and_sends_nothing(
    engine: Engine, session: Session, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop, customer = _setup(session)
    mail = new_mail(session, shop, customer.email, customer.id)
    session.commit()
    monkeypatch.delenv("AUTOMAIL_SECRET_KEY")

    with pytest.raises(MissingSecretKey, match="AUTOMAIL_SECRET_KEY"):
        send(engine, smtp_sink, mail.id)
    with pytest.raises(MissingSecretKey, match="AUTOMAIL_SECRET_KEY"):
        run_send_cycle(session_factory(engine), SmtpConfig(port=smtp_sink.port), "no-key")

    _fresh(session)
    m = session.get(Mail, mail.id)
    assert (m.status, m.claimed_by, m.message_id, smtp_sink.messages) == ("unsent", None, None, [])
