"""The send loop against a fake messenger (sending/smtp.Messenger): every reply shape
lands in the right state, and at every send the mail's in_flight attempt is already
committed in the store, as the exactly-once rule requires — on both stores, with the
PostgreSQL lanes too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from automail import settings
from automail.db import session_factory
from automail.models import Mail, SendAttempt
from automail.sample_data import make_shop
from automail.sending import plan_run, send_batch
from automail.sending.smtp import SmtpConfig, SmtpResult, SmtpUnavailable

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
REPLIES = {
    "ok": SmtpResult("accepted", 250, "2.0.0", "250 2.0.0 ok"),
    "busy": SmtpResult("temp_fail", 451, "4.3.0", "451 4.3.0 try later"),
    "gone": SmtpResult("perm_fail", 550, "5.1.1", "RCPT TO: 550 5.1.1 no such user"),
    "lost": SmtpResult("in_doubt", None, None, "connection lost after the message was sent"),
}


@dataclass
class FakeMessenger:
    """Answers by the recipient's local part; checks the store before each 'DATA'."""

    engine: Engine
    seen: list[str] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)
    down_after: int | None = None

    def send(self, envelope_from: str, to_address: str, bcc: list[str], data: bytes) -> SmtpResult:
        if self.down_after is not None and len(self.seen) >= self.down_after:
            raise SmtpUnavailable("SMTP connection 'fake': connect failed")
        self.seen.append(to_address)
        with session_factory(self.engine)() as s:  # another connection: committed rows only
            started = s.scalar(
                select(SendAttempt.id)
                .join(Mail, Mail.id == SendAttempt.mail_id)
                .where(Mail.to_address == to_address, SendAttempt.outcome == "in_flight")
            )
        if started is None:
            self.uncommitted.append(to_address)
        return REPLIES[to_address.split(".")[0]]

    def close(self) -> None:
        pass


def _queue(session: Session, kinds: list[str]) -> None:
    shop = make_shop(session)
    for i, kind in enumerate(kinds):
        session.add(
            Mail(shop_id=shop.id, kind="order_confirmation", source_key=f"fake:{i}",
                 to_address=f"{kind}.{i}@example.jp", from_address=shop.from_address,
                 reply_to=shop.reply_to, subject="s", body_text="b")
        )  # fmt: skip
    settings.put(session, "send_commit_group", 3)
    session.commit()


@pytest.mark.parametrize("connections", [1, 3])
def test_every_reply_lands_in_its_state_and_in_flight_precedes_data(
    engine: Engine, session: Session, connections: int
) -> None:
    _queue(session, ["ok", "busy", "ok", "gone", "lost", "ok", "ok", "busy", "ok"])
    plan = plan_run(session_factory(engine), "fake", NOW)
    fakes: list[FakeMessenger] = []

    def messenger(config: SmtpConfig, per_session: Mapping[str, int]) -> FakeMessenger:
        fakes.append(FakeMessenger(engine))
        return fakes[-1]

    cfg = SmtpConfig(connections=connections, name="fake")
    summary = send_batch(
        session_factory(engine), plan.batches[0], plan.claim_id, cfg, "t", NOW, messenger
    )

    assert [f.uncommitted for f in fakes] == [[] for _ in fakes]  # in_flight before DATA
    assert sorted(a for f in fakes for a in f.seen) == sorted(
        m.to_address for m in session.scalars(select(Mail))
    )
    expected_lanes = connections if engine.dialect.name == "postgresql" else 1
    assert len(fakes) == expected_lanes
    assert (summary.sent, summary.retry_scheduled, summary.failed, summary.in_doubt) == (5, 2, 1, 1)
    session.expire_all()
    for mail in session.scalars(select(Mail)):
        want = {"ok": "sent", "busy": "error", "gone": "error", "lost": "held"}
        assert mail.status == want[mail.to_address.split(".")[0]], mail.to_address
        assert mail.claimed_by is None


def test_a_relay_going_down_mid_batch_fails_the_rest_temporarily(
    engine: Engine, session: Session
) -> None:
    _queue(session, ["ok"] * 7)
    plan = plan_run(session_factory(engine), "fake-down", NOW)
    fake = FakeMessenger(engine, down_after=2)
    summary = send_batch(
        session_factory(engine), plan.batches[0], plan.claim_id, SmtpConfig(name="fake"),
        "t", NOW, lambda config, per_session: fake,
    )  # fmt: skip
    assert (summary.sent, summary.retry_scheduled) == (2, 5)
    session.expire_all()
    retried = session.scalars(select(Mail).where(Mail.status == "error")).all()
    assert len(retried) == 5
    assert all("'fake'" in m.last_error and m.next_attempt_at for m in retried)
