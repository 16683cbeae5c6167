"""Sending against a real aiosmtpd sink on both stores (A4, A8, B7–B10, F3, F4)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from automail import settings
from automail.bounce_links import MailSigner
from automail.db import session_factory
from automail.models import Customer, Mail, MailEvent, SendAttempt
from automail.sample_data import make_customer, make_shop
from automail.sending import (
    SendingStopped,
    SmtpConfig,
    release_held,
    run_send_cycle,
    send_batch,
    send_now,
)
from automail.smtp_sink import SmtpSink, free_port

_seq = itertools.count()


def _mail(session: Session, shop, to: str = "hanako@example.jp", **kw) -> Mail:
    mail = Mail(
        shop_id=shop.id,
        kind=kw.pop("kind", "order_confirmation"),
        source_key=f"test:{next(_seq)}",
        to_address=to,
        from_address=shop.from_address,
        from_name=shop.from_name,
        reply_to=shop.reply_to,
        bcc=kw.pop("bcc", shop.bcc),
        return_path=shop.return_path,
        subject=kw.pop("subject", "【お茶の山田園】ご注文ありがとうございます"),
        body_text=kw.pop("body_text", "山田 花子 様\nご注文を承りました。"),
        **kw,
    )
    session.add(mail)
    session.flush()
    return mail


def _cfg(sink: SmtpSink) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)


def _attempts(session: Session, mail_id: int) -> list[SendAttempt]:
    session.commit()  # end the read snapshot (SQLite WAL) so other sessions' commits show
    session.expire_all()
    return list(
        session.scalars(select(SendAttempt).where(SendAttempt.mail_id == mail_id).order_by("id"))
    )


def _reload(session: Session, mail_id: int) -> Mail:
    session.commit()  # end the read snapshot (SQLite WAL) so other sessions' commits show
    session.expire_all()
    mail = session.get(Mail, mail_id)
    assert mail is not None
    return mail


def test_sent_mails_arrive_with_headers_and_body(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session, bcc="archive@tea.example.jp", return_path="bounce@tea.example.jp")
    ids = [_mail(session, shop, to=f"user{i}@example.jp").id for i in range(3)]
    session.commit()

    summary = run_send_cycle(session_factory(engine), _cfg(smtp_sink), "t1")

    assert (summary.claimed, summary.sent, summary.failed) == (3, 3, 0)
    assert len(smtp_sink.messages) == 3
    first = smtp_sink.messages[0]
    token = MailSigner().token(shop.id, ids[0])  # ties a bounce to this mail unforgeably
    assert first.mail_from == f"bounce+{ids[0]}-{token}@tea.example.jp"
    assert first.data.startswith(f"Return-Path: <{first.mail_from}>\r\n".encode())
    assert first.rcpt_tos == ["user0@example.jp", "archive@tea.example.jp"]
    msg = first.message
    assert msg["Subject"] == "【お茶の山田園】ご注文ありがとうございます"
    assert b"=?utf-8?" in first.data.split(b"\r\n\r\n")[0]
    assert msg["X-Automail-Id"] == str(ids[0])
    assert msg["Message-ID"] == f"<automail.{ids[0]}-{token}.tea@tea.example.jp>"
    assert msg["Bcc"] is None
    assert msg.get_content_charset() == "utf-8"
    assert "ご注文を承りました。" in msg.get_content()
    mail = _reload(session, ids[0])
    assert (mail.status, mail.claimed_by, mail.attempt_count) == ("sent", None, 1)
    assert mail.sent_at is not None and mail.message_id == msg["Message-ID"]
    [attempt] = _attempts(session, ids[0])
    assert (attempt.outcome, attempt.smtp_code, attempt.enhanced_code) == ("accepted", 250, "2.0.0")
    events = session.scalars(select(MailEvent).where(MailEvent.mail_id == ids[0])).all()
    assert [(e.event, e.from_status, e.to_status) for e in events] == [("sent", "unsent", "sent")]


def test_451_twice_then_250_gives_three_attempts_and_sent(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    mail_id = _mail(session, make_shop(session)).id
    session.commit()
    smtp_sink.handler.temp_failures = 2
    factory, now = session_factory(engine), datetime.now(UTC)

    for _ in range(3):
        run_send_cycle(factory, _cfg(smtp_sink), "t", now=now)
        mail = _reload(session, mail_id)
        if mail.status == "error":
            assert mail.next_attempt_at is not None and mail.next_attempt_at > now
            # Not due before the backoff has elapsed:
            assert run_send_cycle(factory, _cfg(smtp_sink), "t", now=now).claimed == 0
            now = mail.next_attempt_at

    attempts = _attempts(session, mail_id)
    assert [a.outcome for a in attempts] == ["temp_fail", "temp_fail", "accepted"]
    assert [(a.smtp_code, a.enhanced_code) for a in attempts[:2]] == [(451, "4.3.0")] * 2
    assert "Temporary failure" in attempts[0].message
    assert _reload(session, mail_id).status == "sent"
    assert len(smtp_sink.messages) == 1


def test_550_is_an_error_at_once_and_cleans_the_address(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session)
    customer = make_customer(session, shop, "nobody@example.jp")
    mail_id = _mail(session, shop, to="nobody@example.jp", customer_id=customer.id).id
    session.commit()
    smtp_sink.handler.reject["nobody@example.jp"] = "550 5.1.1 <nobody@example.jp>: User unknown"
    factory = session_factory(engine)

    summary = run_send_cycle(factory, _cfg(smtp_sink), "t")
    later = run_send_cycle(factory, _cfg(smtp_sink), "t", now=datetime.now(UTC) + timedelta(days=1))

    assert (summary.failed, later.claimed) == (1, 0)
    [attempt] = _attempts(session, mail_id)
    assert (attempt.outcome, attempt.smtp_code, attempt.enhanced_code) == (
        "perm_fail",
        550,
        "5.1.1",
    )
    mail = _reload(session, mail_id)
    assert mail.status == "error" and mail.next_attempt_at is None
    assert "User unknown" in mail.last_error
    customer = session.get(Customer, customer.id)
    assert customer.address_cleaned and "userunknown" in customer.address_reason
    assert smtp_sink.messages == []


def test_server_down_gives_exactly_five_attempts_then_error(
    engine: Engine, session: Session
) -> None:
    mail_id = _mail(session, make_shop(session)).id
    session.commit()
    down = SmtpConfig(host="127.0.0.1", port=free_port(), timeout=2)
    factory, now = session_factory(engine), datetime.now(UTC)

    for _ in range(8):  # more cycles than needed: the 6th+ must not try again
        run_send_cycle(factory, down, "t", now=now)
        now += timedelta(days=1)

    attempts = _attempts(session, mail_id)
    assert [a.outcome for a in attempts] == ["temp_fail"] * 5
    assert all("ConnectionRefused" in a.message for a in attempts)
    mail = _reload(session, mail_id)
    assert (mail.status, mail.attempt_count, mail.next_attempt_at) == ("error", 5, None)
    assert mail.last_error.startswith("gave up after 5 attempts")


def test_backoff_follows_the_setting(engine: Engine, session: Session) -> None:
    mail_id = _mail(session, make_shop(session)).id
    settings.put(session, "retry_backoff_seconds", [10, 20])
    session.commit()
    down = SmtpConfig(host="127.0.0.1", port=free_port(), timeout=2)
    factory, now = session_factory(engine), datetime(2026, 3, 1, tzinfo=UTC)
    waits = []
    for _ in range(3):
        run_send_cycle(factory, down, "t", now=now)
        nxt = _reload(session, mail_id).next_attempt_at
        waits.append((nxt - now).total_seconds())
        now = nxt
    assert waits == [10, 20, 20]


def test_cap_holds_the_rest_and_sends_one_notice(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session, status_notice_address="status@tea.example.jp")
    ids = [_mail(session, shop, to=f"u{i}@example.jp").id for i in range(8)]
    settings.put(session, "send_cap_per_run", 5)
    session.commit()
    factory = session_factory(engine)

    first = run_send_cycle(factory, _cfg(smtp_sink), "run-1")
    second = run_send_cycle(factory, _cfg(smtp_sink), "run-2")

    assert (first.sent, first.held_cap, first.notices) == (6, 3, 1)
    assert second.claimed == 0  # held mails are never claimed automatically
    to = [m.rcpt_tos[0] for m in smtp_sink.messages]
    assert to[:5] == [f"u{i}@example.jp" for i in range(5)]
    assert to.count("status@tea.example.jp") == 1
    notice = next(m for m in smtp_sink.messages if m.rcpt_tos == ["status@tea.example.jp"])
    assert "3通" in notice.message["Subject"]
    session.commit()  # end the read snapshot (SQLite WAL) so other sessions' commits show
    session.expire_all()
    held = session.scalars(select(Mail).where(Mail.status == "held").order_by(Mail.id)).all()
    assert [m.id for m in held] == ids[5:]
    ev = session.scalars(select(MailEvent).where(MailEvent.mail_id == ids[7])).one()
    assert ev.event == "held_cap" and "cap of 5" in ev.detail

    released, refused = release_held(session, [*ids[5:], ids[0]], actor="reviewer")
    session.commit()
    assert released == ids[5:] and "cannot release" in refused[ids[0]]
    third = run_send_cycle(factory, _cfg(smtp_sink), "run-3")
    assert (third.sent, third.notices) == (3, 0)
    assert smtp_sink.handler.message_id_counts().most_common(1)[0][1] == 1


def test_notice_goes_to_admin_when_no_status_address(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session)
    for i in range(3):
        _mail(session, shop, to=f"u{i}@example.jp")
    settings.put(session, "send_cap_per_run", 2)
    session.commit()
    run_send_cycle(session_factory(engine), _cfg(smtp_sink), "r")
    assert [m.rcpt_tos for m in smtp_sink.messages][-1] == ["admin@tea.example.jp"]


def test_lapsed_lease_without_in_flight_attempt_is_sent_once(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    now = datetime.now(UTC)
    mail_id = _mail(
        session, make_shop(session), claimed_by="run:dead", lease_until=now - timedelta(minutes=1)
    ).id
    session.commit()
    factory = session_factory(engine)

    summary = run_send_cycle(factory, _cfg(smtp_sink), "t")
    run_send_cycle(factory, _cfg(smtp_sink), "t2")

    assert (summary.leases_released, summary.sent) == (1, 1)
    assert list(smtp_sink.handler.message_id_counts().values()) == [1]
    assert _reload(session, mail_id).status == "sent"
    events = [
        e.event for e in session.scalars(select(MailEvent).where(MailEvent.mail_id == mail_id))
    ]
    assert events == ["lease_expired", "sent"]


def test_lapsed_lease_with_in_flight_attempt_is_held_in_doubt(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    now = datetime.now(UTC)
    mail = _mail(
        session,
        make_shop(session),
        claimed_by="run:dead",
        lease_until=now - timedelta(minutes=1),
        attempt_count=1,
        message_id="<automail.1.tea@tea.example.jp>",
    )
    session.add(
        SendAttempt(
            mail_id=mail.id,
            attempt_no=1,
            claim_id="run:dead",
            started_at=now - timedelta(minutes=11),
            outcome="in_flight",
        )
    )
    session.commit()

    summary = run_send_cycle(session_factory(engine), _cfg(smtp_sink), "t")

    assert (summary.recovered_in_doubt, summary.sent) == (1, 0)
    assert smtp_sink.messages == []
    mail = _reload(session, mail.id)
    assert mail.status == "held" and mail.claimed_by is None
    assert mail.last_error.startswith("in doubt: worker died during the SMTP transaction")
    assert "<automail.1.tea@tea.example.jp>" in mail.last_error
    assert [a.outcome for a in _attempts(session, mail.id)] == ["in_doubt"]


def test_retried_batch_task_never_resends_the_in_flight_mail(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    """An Airflow retry of a mapped task (the first try killed, or still running) must
    not resend a mail with an unfinished attempt: it skips it; once the lease lapses,
    lease recovery holds it in doubt."""
    now = datetime.now(UTC)
    shop = make_shop(session)
    lease = now + timedelta(minutes=5)
    a = _mail(session, shop, claimed_by="run:x", lease_until=lease, attempt_count=1)
    b = _mail(session, shop, to="b@example.jp", claimed_by="run:x", lease_until=lease)
    session.add(
        SendAttempt(
            mail_id=a.id, attempt_no=1, claim_id="run:x", started_at=now, outcome="in_flight"
        )
    )
    session.commit()

    summary = send_batch(session_factory(engine), [a.id, b.id], "run:x", _cfg(smtp_sink))

    assert (summary.in_doubt, summary.sent, summary.skipped) == (0, 1, 1)
    assert [m.rcpt_tos for m in smtp_sink.messages] == [["b@example.jp"]]
    mail = _reload(session, a.id)
    assert (mail.status, mail.claimed_by) == ("unsent", "run:x")  # its sender may be alive
    session.commit()

    later = now + timedelta(minutes=20)  # the killed try never finished it
    recovered = run_send_cycle(session_factory(engine), _cfg(smtp_sink), "t", later)

    assert (recovered.recovered_in_doubt, recovered.sent) == (1, 0)
    assert len(smtp_sink.messages) == 1
    assert _reload(session, a.id).status == "held"


def test_bad_address_is_an_error_and_the_batch_goes_on(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session)
    customer = make_customer(session, shop, "sample.@example.jp")
    good1 = _mail(session, shop, to="a@example.jp").id
    bad = _mail(session, shop, to="sample.@example.jp", customer_id=customer.id).id
    injected = _mail(session, shop, to="c@example.jp", subject="hi\r\nBcc: victim@evil.example").id
    good2 = _mail(session, shop, to="d@example.jp").id
    session.commit()

    summary = run_send_cycle(session_factory(engine), _cfg(smtp_sink), "t")

    assert (summary.sent, summary.refused) == (2, 2)
    assert [m.rcpt_tos[0] for m in smtp_sink.messages] == ["a@example.jp", "d@example.jp"]
    for mail_id, words in (
        (bad, "'sample.@example.jp' has a dot right before the @"),
        (injected, "subject"),
    ):
        mail = _reload(session, mail_id)
        assert mail.status == "error" and words in mail.last_error
        [attempt] = _attempts(session, mail_id)
        assert attempt.outcome == "refused"
    assert "U+000D CR" in _reload(session, injected).last_error
    assert all(_reload(session, i).status == "sent" for i in (good1, good2))
    assert session.get(Customer, customer.id).address_cleaned


def test_address_check_can_be_switched_off_per_shop(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session, address_check=False)
    mail_id = _mail(session, shop, to="taro..yamada@docomo.ne.jp").id
    session.commit()
    run_send_cycle(session_factory(engine), _cfg(smtp_sink), "t")
    assert _reload(session, mail_id).status == "sent"
    assert smtp_sink.messages[0].rcpt_tos == ["taro..yamada@docomo.ne.jp"]


def test_mail_server_stopped_sends_nothing(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    mail_id = _mail(session, make_shop(session)).id
    settings.put(session, "mail_server_stopped", True)
    session.commit()
    factory = session_factory(engine)

    summary = run_send_cycle(factory, _cfg(smtp_sink), "t")
    with pytest.raises(SendingStopped):
        send_now(factory, [mail_id], "staff", _cfg(smtp_sink))
    assert summary.stopped and summary.claimed == 0
    # A batch already planned stops too, giving its claim back.
    session.execute(Mail.__table__.update().values(claimed_by="run:p"))
    session.commit()
    batch = send_batch(factory, [mail_id], "run:p", _cfg(smtp_sink))
    assert batch.stopped and batch.sent == 0
    mail = _reload(session, mail_id)
    assert (mail.status, mail.claimed_by, smtp_sink.messages) == ("unsent", None, [])


def test_send_now_sends_manual_mails_and_resends_with_a_new_attempt(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session)
    manual = _mail(session, shop, mode="manual").id
    deleted = _mail(session, shop, status="deleted").id
    session.commit()
    factory = session_factory(engine)

    assert run_send_cycle(factory, _cfg(smtp_sink), "t").claimed == 0  # manual: by hand only
    first = send_now(factory, [manual, deleted], "staff@shop", _cfg(smtp_sink))
    again = send_now(factory, [manual], "staff@shop", _cfg(smtp_sink))

    assert (first.sent, again.sent) == (1, 1)
    assert "cannot send a mail whose status is 'deleted'" in first.not_claimed[deleted]
    assert [a.outcome for a in _attempts(session, manual)] == ["accepted", "accepted"]
    ids = [m.message["Message-ID"] for m in smtp_sink.messages]
    token = MailSigner().token(shop.id, manual)
    assert ids[0] != ids[1] and ids[1].startswith(f"<automail.{manual}-{token}.tea.r1@")
    assert smtp_sink.messages[1].mail_from == "shop@tea.example.jp"  # no return path: From
    events = session.scalars(select(MailEvent).where(MailEvent.mail_id == manual)).all()
    assert [(e.event, e.to_status, e.actor) for e in events] == [
        ("sent", "sent", "staff@shop"),
        ("resend", "unsent", "staff@shop"),
        ("sent", "sent", "staff@shop"),
    ]


def test_domain_rate_limit_leaves_the_rest_unsent_for_the_next_run(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session)
    for i in range(7):
        _mail(session, shop, to=f"m{i}@example.ne.jp")  # no carrier default
    _mail(session, shop, to="pc@example.jp")
    settings.put(session, "domain_rate_per_minute", 1)  # 5 per 5-minute run
    session.commit()
    factory = session_factory(engine)

    first = run_send_cycle(factory, _cfg(smtp_sink), "r1")
    assert (first.sent, first.deferred_rate, first.held_cap) == (6, 2, 0)
    session.commit()  # end the read snapshot (SQLite WAL) so other sessions' commits show
    session.expire_all()
    left = session.scalars(select(Mail).where(Mail.status == "unsent")).all()
    assert len(left) == 2 and all(m.claimed_by is None for m in left)
    assert run_send_cycle(factory, _cfg(smtp_sink), "r2").sent == 2


def test_pending_notice_at_most_once_per_shop_per_day(
    engine: Engine, session: Session, smtp_sink: SmtpSink
) -> None:
    shop = make_shop(session, notify_pending=True)
    _mail(session, shop, status="held")
    _mail(session, shop, mode="manual")
    session.commit()
    factory = session_factory(engine)
    now = datetime(2026, 3, 2, 1, tzinfo=UTC)

    first = run_send_cycle(factory, _cfg(smtp_sink), "r1", now=now)
    second = run_send_cycle(factory, _cfg(smtp_sink), "r2", now=now + timedelta(hours=1))
    next_day = run_send_cycle(factory, _cfg(smtp_sink), "r3", now=now + timedelta(days=1))

    assert (first.notices, second.notices, next_day.notices) == (1, 0, 1)
    body = smtp_sink.messages[0].message.get_content()
    assert "held: 1" in body and "unsent: 1" in body


def test_cli_send_run_release_and_recover(
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import json

    from automail.cli import main

    shop = make_shop(session)
    sent_id = _mail(session, shop).id
    held_id = _mail(session, shop, to="h@example.jp", status="held").id
    session.commit()
    monkeypatch.setenv(
        "AIRFLOW_CONN_AUTOMAIL_SMTP",
        f"smtp://127.0.0.1:{smtp_sink.port}?disable_ssl=true&disable_tls=true",
    )

    assert main(["send", "run", "--run-id", "cli-1"]) == 0
    assert json.loads(capsys.readouterr().out)["sent"] == 1
    assert main(["send", "release", str(held_id), str(sent_id)]) == 1  # sent_id is refused
    out = json.loads(capsys.readouterr().out)
    assert out["released"] == [held_id] and "cannot release" in out["refused"][str(sent_id)]
    assert main(["send", "recover"]) == 0
    assert main(["send", "run", "--run-id", "cli-2"]) == 0
    assert [m.rcpt_tos[0] for m in smtp_sink.messages] == ["hanako@example.jp", "h@example.jp"]


def test_postgres_fast_path_quotes_every_value_literally(engine: Engine) -> None:
    # The group statements are built client-side (batch._pg_statement): values with
    # quotes, percent signs and parameter-like text must arrive exactly as given.
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL fast path")
    from automail.sending.batch import _pg_statement

    tricky = [(1, "100% 'done' %(actor)s; --"), (2, None), (3, "日本語\\n")]
    template = "SELECT a, b FROM (VALUES {values}) v(a, b) WHERE %(x)s = '50%%'"
    with engine.connect() as conn:
        cur = conn.connection.dbapi_connection.cursor()
        cur.execute(_pg_statement(cur, template, {"x": "50%"}, tricky))
        assert cur.fetchall() == tricky


def test_postgres_fast_path_writes_the_same_events_as_the_one_status_change(
    engine: Engine, session: Session, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PostgreSQL group statements (batch.PG_START_SQL/PG_SENT_SQL) must leave exactly
    # what sending/status.change_status leaves: same events, statuses and attempts.
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL fast path")
    from automail.sending import batch as batch_module

    shop = make_shop(session)
    smtp_sink.handler.reject["nobody@example.jp"] = "550 5.1.1 <nobody@example.jp>: unknown"
    addresses = ["a@example.jp", "nobody@example.jp", "b@example.jp", "bad..dots@example.jp"]
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)

    def run(fast: bool) -> list[tuple]:
        ids = [_mail(session, shop, to=a).id for a in addresses]
        session.commit()
        monkeypatch.setattr(batch_module, "_pg_fast_path", lambda s: fast)
        run_send_cycle(session_factory(engine), _cfg(smtp_sink), f"fast-{fast}", now=now)
        session.expire_all()
        events = [
            [
                (e.event, e.from_status, e.to_status, e.actor, e.detail, e.at)
                for e in session.scalars(
                    select(MailEvent).where(MailEvent.mail_id == i).order_by(MailEvent.id)
                )
            ]
            for i in ids
        ]
        mails = [
            (m.status, m.attempt_count, m.claimed_by, m.sent_at, m.last_error)
            for m in (_reload(session, i) for i in ids)
        ]
        attempts = [
            [(a.outcome, a.smtp_code, a.message) for a in _attempts(session, i)] for i in ids
        ]
        return [events, mails, attempts]

    assert run(fast=True) == run(fast=False)
