"""The exactly-once order of a batch, seen from the SMTP server (F3), on both stores.

The batch overlaps its per-mail commit with MAIL FROM / RCPT TO (PostgreSQL), so the
sink itself checks, at every DATA, in its own database connection, that:
- the mail's `in_flight` attempt is already committed (a crash after DATA is detected);
- the previous mail's outcome is already committed too (one commit per mail).
A mail whose claim is lost while its envelope is on the wire gets no DATA at all.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, create_engine, select, text, update
from sqlalchemy.orm import Session

from automail.db import session_factory
from automail.models import Mail, SendAttempt
from automail.sample_data import make_shop
from automail.sending import SmtpConfig, send_batch
from automail.smtp_sink import SinkHandler, SmtpSink

CLAIM = "run:order"


class CheckingHandler(SinkHandler):
    """Records, at each DATA, what the store shows about that mail and the one before."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.engine: Engine | None = None  # made in the sink's thread (SQLite threads)
        self.seen: list[tuple[int, list[str], str | None]] = []
        self.steal_on_rcpt: dict[str, int] = {}  # RCPT address -> mail id to un-claim

    def _db(self) -> Engine:
        if self.engine is None:
            self.engine = create_engine(self.url)
        return self.engine

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, N802
        victim = self.steal_on_rcpt.pop(address, None)
        if victim is not None:
            with self._db().begin() as conn:
                conn.execute(text("UPDATE mails SET claimed_by='run:other' WHERE id=:i"), {"i": victim})
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        mail_id = int(re.search(rb"X-Automail-Id: (\d+)", envelope.content).group(1))
        with self._db().connect() as conn:
            outcomes = conn.scalars(
                text("SELECT outcome FROM send_attempts WHERE mail_id=:i ORDER BY id"),
                {"i": mail_id},
            ).all()
            previous = conn.scalar(
                text("SELECT status FROM mails WHERE id < :i ORDER BY id DESC LIMIT 1"),
                {"i": mail_id},
            )
        self.seen.append((mail_id, list(outcomes), previous))
        return await super().handle_DATA(server, session, envelope)


def _queue(session: Session, n: int) -> list[int]:
    shop = make_shop(session, bcc=None)
    mails = [
        Mail(
            shop_id=shop.id,
            kind="order_confirmation",
            source_key=f"order-test:{i}",
            to_address=f"user{i}@example.jp",
            from_address=shop.from_address,
            from_name=shop.from_name,
            reply_to=shop.reply_to,
            subject="【お茶の山田園】ご注文ありがとうございます",
            body_text="山田 花子 様\nご注文を承りました。",
            status="unsent",
            claimed_by=CLAIM,
        )
        for i in range(n)
    ]
    session.add_all(mails)
    session.commit()
    return [m.id for m in mails]


def _sink(store_url: str) -> SmtpSink:
    sink = SmtpSink()
    sink.handler = CheckingHandler(store_url)
    sink.controller.handler = sink.handler
    return sink


def test_in_flight_and_previous_outcome_are_committed_before_each_data(
    engine: Engine, session: Session, store_url: str
) -> None:
    ids = _queue(session, 12)
    with _sink(store_url) as sink:
        summary = send_batch(
            session_factory(engine), ids, CLAIM, SmtpConfig(host="127.0.0.1", port=sink.port)
        )
    assert summary.sent == 12
    seen = sink.handler.seen
    assert [mail_id for mail_id, _, _ in seen] == ids
    for k, (_mail_id, outcomes, previous) in enumerate(seen):
        assert outcomes == ["in_flight"]
        if k > 0:
            assert previous == "sent"


def test_a_mail_whose_claim_is_lost_mid_envelope_gets_no_data(
    engine: Engine, session: Session, store_url: str
) -> None:
    ids = _queue(session, 3)
    with _sink(store_url) as sink:
        sink.handler.steal_on_rcpt["user0@example.jp"] = ids[1]
        summary = send_batch(
            session_factory(engine), ids, CLAIM, SmtpConfig(host="127.0.0.1", port=sink.port)
        )
    assert (summary.sent, summary.skipped) == (2, 1)
    assert [mail_id for mail_id, _, _ in sink.handler.seen] == [ids[0], ids[2]]
    session.expire_all()
    assert session.scalar(select(Mail.status).where(Mail.id == ids[1])) == "unsent"
    assert not session.scalars(select(SendAttempt).where(SendAttempt.mail_id == ids[1])).all()
    session.execute(update(Mail).where(Mail.id == ids[1]).values(claimed_by=None))
