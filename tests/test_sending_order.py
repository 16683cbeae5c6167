"""The exactly-once order of a batch, seen from the SMTP server (F3), on both stores.

The batch commits in groups and overlaps a group's bookkeeping with the previous
group's SMTP traffic (PostgreSQL), so the sink itself checks, at every DATA, in its own
database connection, that:
- the mail's `in_flight` attempt is already committed (a crash after DATA is detected);
- outcomes lag by at most two groups: every mail two groups back is already `sent`.
A mail whose claim is lost before its group starts gets no DATA at all.
"""

from __future__ import annotations

import re

from bounce_helpers import new_mail
from sqlalchemy import Engine, create_engine, select, text, update
from sqlalchemy.orm import Session

from automail import settings
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
        self.seen: list[tuple[int, list[str], dict[int, str]]] = []
        self.steal_on_rcpt: dict[str, int] = {}  # RCPT address -> mail id to un-claim

    def _db(self) -> Engine:
        if self.engine is None:
            self.engine = create_engine(self.url)
        return self.engine

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, N802
        victim = self.steal_on_rcpt.pop(address, None)
        if victim is not None:
            with self._db().begin() as conn:
                conn.execute(
                    text("UPDATE mails SET claimed_by='run:other' WHERE id=:i"), {"i": victim}
                )
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        mail_id = int(re.search(rb"X-Automail-Id: (\d+)", envelope.content).group(1))
        with self._db().connect() as conn:
            outcomes = conn.scalars(
                text("SELECT outcome FROM send_attempts WHERE mail_id=:i ORDER BY id"),
                {"i": mail_id},
            ).all()
            earlier = dict(
                conn.execute(
                    text("SELECT id, status FROM mails WHERE id < :i"), {"i": mail_id}
                ).all()
            )
        self.seen.append((mail_id, list(outcomes), earlier))
        return await super().handle_DATA(server, session, envelope)


def _queue(session: Session, n: int, group: int) -> list[int]:
    shop = make_shop(session, bcc=None)
    settings.put(session, "send_commit_group", group)
    mails = [
        new_mail(session, shop, f"user{i}@example.jp", None, claimed_by=CLAIM) for i in range(n)
    ]
    session.commit()
    return [m.id for m in mails]


def _sink(store_url: str) -> SmtpSink:
    sink = SmtpSink()
    sink.handler = CheckingHandler(store_url)
    sink.controller.handler = sink.handler
    return sink


def test_in_flight_is_committed_before_each_data_and_outcomes_lag_two_groups_at_most(
    engine: Engine, session: Session, store_url: str
) -> None:
    ids = _queue(session, 12, group=3)
    with _sink(store_url) as sink:
        summary = send_batch(
            session_factory(engine), ids, CLAIM, SmtpConfig(host="127.0.0.1", port=sink.port)
        )
    assert summary.sent == 12
    seen = sink.handler.seen
    assert [mail_id for mail_id, _, _ in seen] == ids
    for k, (_mail_id, outcomes, earlier) in enumerate(seen):
        assert outcomes == ["in_flight"]
        settled = ids[: max(0, (k // 3 - 1) * 3)]  # every mail two groups back or more
        assert all(earlier[i] == "sent" for i in settled), (k, earlier)
    # and the lag is real bookkeeping, not a commit per mail: the group still sending
    # has not been written when its own last mail goes out
    assert seen[-1][2][ids[9]] == "unsent"


def test_a_mail_whose_claim_is_lost_before_its_group_starts_gets_no_data(
    engine: Engine, session: Session, store_url: str
) -> None:
    ids = _queue(session, 3, group=1)
    with _sink(store_url) as sink:
        # while mail 0 is on the wire, another run takes mail 2 (its group starts later)
        sink.handler.steal_on_rcpt["user0@example.jp"] = ids[2]
        summary = send_batch(
            session_factory(engine), ids, CLAIM, SmtpConfig(host="127.0.0.1", port=sink.port)
        )
    assert (summary.sent, summary.skipped) == (2, 1)
    assert [mail_id for mail_id, _, _ in sink.handler.seen] == [ids[0], ids[1]]
    session.expire_all()
    assert session.scalar(select(Mail.status).where(Mail.id == ids[2])) == "unsent"
    assert not session.scalars(select(SendAttempt).where(SendAttempt.mail_id == ids[2])).all()
    session.execute(update(Mail).where(Mail.id == ids[2]).values(claimed_by=None))
