"""The SMTP server is down for whole send runs, then back up (issue 8, A8).

Down = a loopback port nothing listens on (connection refused). Each run records one
`temp_fail` attempt per mail, sets status `error` with `next_attempt_at` per the
backoff, and the mail is not due before that time; when a real aiosmtpd sink comes up
on the same port every mail is sent exactly once. Down for max_retries + 1 runs, a
mail is an error for good (no next attempt) and is not sent when the server returns.
Both stores. Time is passed forward as `now` instead of waiting for the backoff.

Knob: FAULTS_OUTAGE_MAILS (default 30).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from automail import settings
from automail.db import session_factory
from automail.models import Mail, SendAttempt
from automail.sending import SmtpConfig, run_send_cycle
from automail.smtp_sink import SmtpSink, free_port

from .conftest import FaultTotals, env_int, fault_shop, judge, queue_mails


def _state(session: Session, ids: list[int]) -> tuple[list[Mail], Counter]:
    session.commit()  # a fresh snapshot (SQLite WAL)
    session.expire_all()
    mails = list(session.scalars(select(Mail).where(Mail.id.in_(ids)).order_by(Mail.id)))
    outcomes = Counter(
        session.scalars(select(SendAttempt.outcome).where(SendAttempt.mail_id.in_(ids)))
    )
    return mails, outcomes


def _down_run(factory, cfg: SmtpConfig, session: Session, ids: list[int], n: int, now):  # noqa: ANN001, ANN201
    summary = run_send_cycle(factory, cfg, f"down-{n}", now)
    assert summary.sent == 0 and summary.claimed == len(ids)
    mails, outcomes = _state(session, ids)
    assert outcomes == Counter({"temp_fail": n * len(ids)})
    assert all(m.status == "error" and m.attempt_count == n for m in mails)
    return summary, mails


def test_server_down_for_two_runs_then_up_sends_every_mail_once(
    engine: Engine, session: Session, fault_totals: FaultTotals
) -> None:
    shop = fault_shop(engine)
    ids = queue_mails(engine, shop, env_int("FAULTS_OUTAGE_MAILS", 30), "outage")
    factory, port, now = session_factory(engine), free_port(), datetime.now(UTC)
    cfg = SmtpConfig(host="127.0.0.1", port=port, timeout=5)
    runs = 0
    for n in (1, 2):
        summary, mails = _down_run(factory, cfg, session, ids, n, now)
        runs += 1
        assert summary.retry_scheduled == len(ids)
        assert all(m.next_attempt_at is not None and m.next_attempt_at > now for m in mails)
        assert all(
            f"attempt {n} of " in m.last_error and "retry after" in m.last_error for m in mails
        )
        assert run_send_cycle(factory, cfg, f"early-{n}", now).claimed == 0  # backoff holds
        runs += 1
        now = max(m.next_attempt_at for m in mails)
    with SmtpSink(port=port) as sink:
        summary = run_send_cycle(factory, cfg, "up", now)
        again = run_send_cycle(factory, cfg, "up-again", now)
        runs += 2
        counts = sink.handler.message_id_counts()
    assert summary.sent == len(ids) and again.claimed == 0
    verdict = judge(session, ids, counts)
    mails, outcomes = _state(session, ids)
    assert outcomes == Counter({"temp_fail": 2 * len(ids), "accepted": len(ids)})
    assert all(m.attempt_count == 3 and m.next_attempt_at is None for m in mails)
    _record(fault_totals, engine, "outage then up", runs, verdict)
    assert verdict.lost == [] and verdict.duplicated == [] and verdict.sent == len(ids)


def test_server_down_past_max_retries_leaves_errors_that_are_not_sent_later(
    engine: Engine, session: Session, fault_totals: FaultTotals
) -> None:
    shop = fault_shop(engine)
    ids = queue_mails(engine, shop, 10, "outage-max")
    max_retries = settings.get(session, "max_retries")
    factory, port, now = session_factory(engine), free_port(), datetime.now(UTC)
    cfg = SmtpConfig(host="127.0.0.1", port=port, timeout=5)
    for n in range(1, max_retries + 2):
        summary, mails = _down_run(factory, cfg, session, ids, n, now)
        if n <= max_retries:
            now = max(m.next_attempt_at for m in mails)
    assert summary.failed == len(ids) and summary.retry_scheduled == 0
    assert all(m.next_attempt_at is None and "gave up after" in m.last_error for m in mails)
    with SmtpSink(port=port) as sink:
        later = run_send_cycle(factory, cfg, "up", now.replace(year=now.year + 1))
        counts = sink.handler.message_id_counts()
    assert later.claimed == 0 and not counts  # an error for good is not retried
    mails, outcomes = _state(session, ids)
    assert outcomes == Counter({"temp_fail": (max_retries + 1) * len(ids)})
    fault_totals.runs += max_retries + 2
    fault_totals.mails += len(ids)
    fault_totals.lines.append(
        f"outage past retries ({engine.dialect.name}): "
        + json.dumps({"mails": len(ids), "attempts_each": max_retries + 1, "error": len(mails)})
    )


def _record(totals: FaultTotals, engine: Engine, name: str, runs: int, verdict) -> None:  # noqa: ANN001
    totals.runs += runs
    totals.mails += verdict.mails
    totals.sent += verdict.sent
    totals.lost += len(verdict.lost)
    totals.duplicated += len(verdict.duplicated)
    info = {
        "mails": verdict.mails,
        "sent": verdict.sent,
        "lost": len(verdict.lost),
        "duplicated": len(verdict.duplicated),
    }
    totals.lines.append(f"{name} ({engine.dialect.name}): {json.dumps(info)}")
