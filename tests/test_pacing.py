"""Per-domain pacing (H2): carrier defaults, per-session recipient limits, the run
interval scaling per-minute limits, and a 4xx-refusing domain slowing down without
burning its mails' retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automail import settings
from automail.db import session_factory
from automail.models import DomainBackoff, Mail, MailEvent, SendAttempt
from automail.relay_sim import RelaySim, make_test_ca
from automail.sample_data import make_shop
from automail.sending import plan_run, run_send_cycle
from automail.sending.smtp import SmtpConfig
from automail.smtp_sink import SmtpSink

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def _queue(session: Session, shop, addresses: list[str]) -> list[int]:  # noqa: ANN001
    mails = [
        Mail(
            shop_id=shop.id,
            kind="order_confirmation",
            source_key=f"pace:{a}",
            to_address=a,
            from_address=shop.from_address,
            reply_to=shop.reply_to,
            subject="ご注文",
            body_text="本文",
        )
        for a in addresses
    ]
    session.add_all(mails)
    session.flush()
    return [m.id for m in mails]


def test_per_minute_allowance_follows_the_run_interval(engine, session: Session) -> None:  # noqa: ANN001
    shop = make_shop(session)
    _queue(session, shop, [f"d{i}@docomo.ne.jp" for i in range(12)] + ["pc@example.jp"])
    settings.put(session, "domain_pacing", {"docomo.ne.jp": {"per_minute": 2}})
    session.commit()
    plan = plan_run(session_factory(engine), "pace-2m", NOW, interval=timedelta(minutes=2))
    assert (plan.summary.claimed, plan.summary.deferred_rate) == (5, 8)  # 2/min x 2 min + pc
    with session_factory(engine)() as s:  # outside Airflow: the send_interval_minutes setting
        settings.put(s, "send_interval_minutes", 5)
        settings.put(s, "lease_seconds", 1)
        s.commit()
    later = plan_run(session_factory(engine), "pace-5m", NOW + timedelta(minutes=1))
    assert (later.summary.claimed, later.summary.deferred_rate) == (8, 0)  # the rest (<= 10)


def test_carrier_defaults_apply_without_any_setting(engine, session: Session) -> None:  # noqa: ANN001
    shop = make_shop(session)
    _queue(session, shop, [f"d{i}@ezweb.ne.jp" for i in range(1510)])
    session.commit()
    plan = plan_run(session_factory(engine), "carrier", NOW, interval=timedelta(minutes=5))
    assert (plan.summary.claimed, plan.summary.deferred_rate) == (1500, 10)  # 300/min x 5


def test_recipients_per_session_reconnects(engine, session: Session, tmp_path: Path) -> None:  # noqa: ANN001
    shop = make_shop(session)
    _queue(session, shop, [f"d{i}@docomo.ne.jp" for i in range(7)] + ["a@example.jp"])
    settings.put(session, "domain_pacing", {"docomo.ne.jp": {"per_session": 3}})
    session.commit()
    ca = make_test_ca(tmp_path / "tls")
    with RelaySim(ca) as relay:
        cfg = SmtpConfig(
            host="127.0.0.1", port=relay.port, use_starttls=True, ca_file=str(ca.ca_file),
            login=relay.login, password=relay.password, timeout=10,
        )  # fmt: skip
        summary = run_send_cycle(session_factory(engine), cfg, "per-session", NOW)
        assert summary.sent == 8
        assert relay.handler.logins == 3  # 3 + 3 + 1 docomo recipients (+ the other domain)


def test_a_refusing_domain_waits_without_burning_retries(
    engine, session: Session, smtp_sink: SmtpSink
) -> None:  # noqa: ANN001
    shop = make_shop(session)
    docomo = _queue(session, shop, [f"d{i}@docomo.ne.jp" for i in range(6)])
    other = _queue(session, shop, [f"p{i}@example.jp" for i in range(4)])
    settings.put(session, "send_commit_group", 2)
    settings.put(session, "domain_backoff_seconds", 300)
    session.commit()
    for i in range(6):
        smtp_sink.handler.reject[f"d{i}@docomo.ne.jp"] = "421 4.7.0 Too many connections, slow down"
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=10)
    factory = session_factory(engine)

    first = run_send_cycle(factory, cfg, "refuse-1", NOW)
    assert first.sent == 4 and first.retry_scheduled >= 1
    assert first.retry_scheduled + first.deferred_backoff == 6
    session.expire_all()
    attempts = session.scalar(
        select(func.count()).select_from(SendAttempt).where(SendAttempt.mail_id.in_(docomo))
    )
    assert attempts == first.retry_scheduled  # the deferred ones used no attempt
    wait = session.get(DomainBackoff, "docomo.ne.jp")
    assert wait is not None and wait.until == NOW + timedelta(seconds=300)
    assert "421" in wait.reason
    events = session.scalars(select(MailEvent.event).where(MailEvent.mail_id.in_(docomo))).all()
    assert events.count("domain_backoff") == first.deferred_backoff

    # While it waits, runs leave the domain alone; afterwards everything goes.
    second = run_send_cycle(factory, cfg, "refuse-2", NOW + timedelta(minutes=2))
    assert second.claimed == 0  # the deferred wait for their time, the retried for the domain
    assert second.deferred_rate == first.retry_scheduled
    smtp_sink.handler.reject.clear()
    third = run_send_cycle(factory, cfg, "refuse-3", NOW + timedelta(hours=2))
    assert third.sent == 6
    session.commit()  # end the read snapshot (SQLite WAL) so the runs' commits show
    session.expire_all()
    statuses = session.scalars(select(Mail.status).where(Mail.id.in_(docomo + other))).all()
    assert set(statuses) == {"sent"}
