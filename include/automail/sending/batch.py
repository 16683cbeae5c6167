"""Sending one batch of claimed mails over one reused SMTP connection (F3, A8, B9, B10).

Exactly-once bookkeeping, per mail i:
1. an `in_flight` SendAttempt is written (and the claim checked/renewed) and committed
   together with the outcome of mail i-1 — one commit per mail;
2. the SMTP transaction runs;
3. the outcome (attempt + status + event + address health) is written, committed with
   step 1 of mail i+1.
A worker killed between 1 and 3 leaves an `in_flight` attempt that lease recovery turns
into `held` "in doubt" (claim.py); one killed elsewhere loses nothing committed.

"Sent" means accepted by the SMTP server (B10), not delivered. A bad recipient or an
unsafe header makes only that mail an error (attempt outcome `refused`); the batch goes on.
If the server cannot be reached, every remaining mail of the batch gets a temporary
failure (retried later) without hammering the server once per mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from automail import address_health, settings
from automail.addresses import check_address, split_address_list
from automail.mime import HeaderCache, MailBuildError, message_id_for, render_bytes
from automail.models import Mail, SendAttempt, Shop
from automail.sending.claim import in_flight_mail_ids, mark_in_doubt, release_claims
from automail.sending.retry import address_verdict, attempts_allowed, next_attempt
from automail.sending.smtp import SmtpConfig, SmtpResult, SmtpSession, SmtpUnavailable
from automail.sending.status import CHUNK, change_status
from automail.sending.summary import SendSummary
from automail.states import ERROR, HELD, SENT

log = logging.getLogger(__name__)
SessionFactory = Callable[[], Session]

# PostgreSQL fast path: the common "accepted" outcome of mail i and the in_flight start
# of mail i+1 go to the server as ONE multi-statement round trip, then one commit
# (synchronous_commit off for that transaction only: a crash can lose at most the
# last few commits of the WAL buffer, never leave a half-written mail). Other
# outcomes and SQLite use the Core statements below; the semantics are identical.
PG_SENT_SQL = """
UPDATE send_attempts SET outcome='accepted', finished_at=:f_now, smtp_code=:f_code,
  enhanced_code=:f_enh, message=:f_msg WHERE id=:f_aid;
UPDATE mails SET status='sent', updated_at=:f_now, sent_at=:f_now, next_attempt_at=NULL,
  last_error=NULL, claimed_by=NULL, lease_until=NULL, attempt_count=:f_n, message_id=:f_mid
  WHERE id=:f_mail;
INSERT INTO mail_events (mail_id, at, event, from_status, to_status, actor, detail)
  VALUES (:f_mail, :f_now, 'sent', :f_from, 'sent', :f_actor, :f_msg);
UPDATE customers SET consecutive_failures=0
  WHERE id=:f_cid AND email=:f_to AND consecutive_failures<>0;
"""
PG_START_SQL = """
WITH l AS (SELECT id FROM mails
  WHERE id=:s_mail AND claimed_by=:s_claim AND attempt_count=:s_n - 1
  FOR NO KEY UPDATE SKIP LOCKED),
m AS (UPDATE mails SET attempt_count=:s_n, lease_until=:s_lease, message_id=:s_mid
  FROM l WHERE mails.id = l.id RETURNING mails.id)
INSERT INTO send_attempts (mail_id, attempt_no, claim_id, started_at, outcome)
  SELECT id, :s_n, :s_claim, :s_now, 'in_flight' FROM m RETURNING id
"""
# Two tries of one batch at once (Airflow re-running a mapped task while the first try
# still runs) must never both send a mail: the start is fenced on attempt_count and
# skips a row another transaction is writing (NO KEY UPDATE: FK checks pass it).


@dataclass(frozen=True)
class Policy:
    max_retries: int
    backoff: list[int] | int
    lease_seconds: int
    invalid_after: int

    @classmethod
    def load(cls, session: Session) -> Policy:
        return cls(
            settings.get(session, "max_retries"),
            settings.get(session, "retry_backoff_seconds"),
            settings.get(session, "lease_seconds"),
            settings.get(session, "invalid_after_failures"),
        )


def _clock(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


class BatchSender:
    def __init__(
        self,
        session: Session,
        claim_id: str,
        policy: Policy,
        actor: str,
        now: datetime | None,
    ) -> None:
        self.session = session
        self.claim_id = claim_id
        self.policy = policy
        self.actor = actor
        self.fixed_now = now
        self.summary = SendSummary()
        self.shops: dict[int, Shop] = {}
        self.pg = session.get_bind().dialect.name == "postgresql"
        self.pending_sent: dict | None = None  # PG: a "sent" outcome not yet written
        self.headers = HeaderCache()  # encoded From/Reply-To, shared by the batch's mails

    def shop(self, shop_id: int) -> Shop:
        if shop_id not in self.shops:
            shop = self.session.get(Shop, shop_id)
            assert shop is not None
            self.session.expunge(shop)  # a read-only snapshot: commits never reload it
            self.shops[shop_id] = shop
        return self.shops[shop_id]

    # -- step 1: in flight ----------------------------------------------------------
    def start_attempt(self, mail: Mail, message_id: str, now: datetime) -> int | None:
        """Write the in_flight attempt if we still hold the claim; returns its id.

        The attempt_count check fences a second process sending the same batch under
        the same claim (Airflow re-running a mapped task while the first try still
        runs): whoever starts the attempt first wins, the other skips the mail.
        """
        if self.pg:
            params = {
                "s_n": mail.attempt_count + 1,
                "s_lease": now + timedelta(seconds=self.policy.lease_seconds),
                "s_mid": message_id,
                "s_mail": mail.id,
                "s_claim": self.claim_id,
                "s_now": now,
            }
            sql = "SET LOCAL synchronous_commit TO OFF;"
            if self.pending_sent is not None:
                sql += PG_SENT_SQL
                params.update(self.pending_sent)
                self.pending_sent = None
            return self.session.execute(text(sql + PG_START_SQL), params).scalar()
        res = self.session.execute(
            update(Mail)
            .where(
                Mail.id == mail.id,
                Mail.claimed_by == self.claim_id,
                Mail.attempt_count == mail.attempt_count,
            )
            .values(
                attempt_count=mail.attempt_count + 1,
                lease_until=now + timedelta(seconds=self.policy.lease_seconds),
                message_id=message_id,
            )
        )
        if res.rowcount != 1:
            return None
        return self.session.execute(
            insert(SendAttempt)
            .values(
                mail_id=mail.id,
                attempt_no=mail.attempt_count + 1,
                claim_id=self.claim_id,
                started_at=now,
                outcome="in_flight",
            )
            .returning(SendAttempt.id)
        ).scalar_one()

    # -- step 3: outcome --------------------------------------------------------------
    def finish(
        self,
        mail: Mail,
        attempt_id: int | None,
        result: SmtpResult,
        now: datetime,
        *,
        outcome: str | None = None,
        address_reason: str | None = None,
        message_id: str | None = None,
    ) -> None:
        attempt_no = mail.attempt_count + 1
        outcome = outcome or result.outcome
        if outcome == "accepted" and self.pg and attempt_id is not None:
            # PG fast path: PG_SENT_SQL writes the attempt, the mail and the event.
            self.flush_pending()  # never more than one deferred outcome
            self.pending_sent = {
                "f_now": now,
                "f_code": result.code,
                "f_enh": result.enhanced,
                "f_msg": _sent_detail(result)[:4000],
                "f_aid": attempt_id,
                "f_n": attempt_no,
                "f_mid": message_id or mail.message_id,
                "f_mail": mail.id,
                "f_from": mail.status,
                "f_actor": self.actor,
                "f_cid": mail.customer_id,
                "f_to": mail.to_address,
            }
            self.summary.sent += 1
            return
        attempt = {
            "outcome": outcome,
            "finished_at": now,
            "smtp_code": result.code,
            "enhanced_code": result.enhanced,
            "message": result.text[:4000],
        }
        if attempt_id is None:  # no SMTP transaction happened: one finished row
            self.session.execute(
                insert(SendAttempt).values(
                    mail_id=mail.id,
                    attempt_no=attempt_no,
                    claim_id=self.claim_id,
                    started_at=now,
                    **attempt,
                )
            )
        else:
            self.session.execute(
                update(SendAttempt).where(SendAttempt.id == attempt_id).values(**attempt)
            )
        common = {"claimed_by": None, "lease_until": None, "attempt_count": attempt_no}
        if message_id is not None:
            common["message_id"] = message_id
        change = self._status_change
        self.flush_pending()
        if outcome == "accepted":
            detail = _sent_detail(result)
            change(
                mail,
                SENT,
                "sent",
                detail,
                now,
                sent_at=now,
                next_attempt_at=None,
                last_error=None,
                **common,
            )
            self.summary.sent += 1
            self._health(mail, "success", None)
        elif outcome == "temp_fail":
            retry_at = next_attempt(attempt_no, self.policy.max_retries, self.policy.backoff, now)
            allowed = attempts_allowed(self.policy.max_retries)
            if retry_at is not None:
                detail = (
                    f"attempt {attempt_no} of {allowed} failed temporarily: {result.text}; "
                    f"retry after {retry_at.isoformat(timespec='seconds')}"
                )
                change(
                    mail,
                    ERROR,
                    "retry_scheduled",
                    detail,
                    now,
                    next_attempt_at=retry_at,
                    last_error=detail,
                    **common,
                )
                self.summary.retry_scheduled += 1
            else:
                detail = f"gave up after {attempt_no} attempts; last: {result.text}"
                change(
                    mail,
                    ERROR,
                    "error",
                    detail,
                    now,
                    next_attempt_at=None,
                    last_error=detail,
                    **common,
                )
                self.summary.failed += 1
                if result.code is not None and not result.text.startswith("MAIL FROM"):
                    self._health(mail, "soft", result.text)
        elif outcome == "perm_fail":
            detail = f"refused by the SMTP server: {result.text}"
            change(
                mail, ERROR, "error", detail, now, next_attempt_at=None, last_error=detail, **common
            )
            self.summary.failed += 1
            if not result.text.startswith("MAIL FROM"):  # sender-side refusals say nothing
                verdict, reason = address_verdict(result.code, result.enhanced, result.text)
                self._health(mail, verdict, f"{reason}: {result.text}")
        elif outcome == "refused":
            change(
                mail,
                ERROR,
                "refused",
                result.text,
                now,
                next_attempt_at=None,
                last_error=result.text,
                **common,
            )
            self.summary.refused += 1
            if address_reason:
                self._health(mail, "hard", address_reason)
        elif outcome == "in_doubt":
            detail = (
                f"in doubt: {result.text} (Message-ID {message_id or mail.message_id}); "
                "check before resending"
            )
            change(
                mail,
                HELD,
                "in_doubt",
                detail,
                now,
                next_attempt_at=None,
                last_error=detail,
                **common,
            )
            self.summary.in_doubt += 1
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown attempt outcome {outcome!r}")

    def _status_change(
        self, mail: Mail, to: str, event: str, detail: str, now: datetime, **values: object
    ) -> None:
        change_status(
            self.session, mail.id, mail.status, to, event, self.actor, detail, now, **values
        )

    def _health(self, mail: Mail, outcome: str, reason: str | None) -> None:
        address_health.record_result(
            self.session,
            mail.customer_id,
            mail.to_address,
            outcome,
            reason,
            threshold=self.policy.invalid_after,
        )

    def flush_pending(self) -> None:
        """Write a deferred "sent" outcome on its own (end of batch, or before a slow path)."""
        if self.pending_sent is not None:
            params, self.pending_sent = self.pending_sent, None
            self.session.execute(
                text("SET LOCAL synchronous_commit TO OFF;" + PG_SENT_SQL), params
            )

    # -- the loop --------------------------------------------------------------------
    def run(self, mails: Sequence[Mail], smtp: SmtpConfig) -> None:
        session = self.session
        unavailable: str | None = None
        pool = ThreadPoolExecutor(1, "automail-commit") if self.pg else None
        with SmtpSession(smtp) as conn, pool or nullcontext():
            for mail in mails:
                now = _clock(self.fixed_now)
                if unavailable is not None:
                    self.finish(mail, None, SmtpResult("temp_fail", None, None, unavailable), now)
                    continue
                shop = self.shop(mail.shop_id)
                message_id = mail.message_id or message_id_for(
                    mail.id, mail.from_address, shop.code
                )
                mail.message_id = message_id
                reason = check_address(mail.to_address) if shop.address_check else None
                address_reason = reason
                data = b""
                if reason is None:
                    try:
                        data = render_bytes(mail, shop, now, self.headers)
                    except MailBuildError as exc:
                        reason = f"cannot build the message: {exc}"
                if reason is not None:
                    self.finish(
                        mail,
                        None,
                        SmtpResult("refused", None, None, reason),
                        now,
                        address_reason=address_reason,
                        message_id=message_id,
                    )
                    continue
                # Outcome of the previous mail + in_flight of this one, one commit. On
                # PostgreSQL it runs in a helper thread while MAIL FROM / RCPT TO travel;
                # DATA waits for it (the in_flight rule holds). SQLite: in line.
                begun: Future[int | None] | None = None
                if pool is not None:
                    begun = pool.submit(self._begin, mail, message_id, now)
                else:
                    attempt_id = self._begin(mail, message_id, now)
                    if attempt_id is None:
                        self.summary.skipped += 1
                        continue
                try:
                    result = conn.send(
                        mail.return_path or mail.from_address,
                        mail.to_address.strip(),
                        split_address_list(mail.bcc),
                        data,
                        None if begun is None else (lambda b=begun: b.result() is not None),
                    )
                except SmtpUnavailable as exc:
                    unavailable = str(exc)
                    result = SmtpResult("temp_fail", None, None, unavailable)
                    log.warning("batch %s: %s", self.claim_id, unavailable)
                if begun is not None:
                    attempt_id = begun.result()  # always joined before the session is reused
                    if attempt_id is None:  # claim lost: no DATA was sent
                        self.summary.skipped += 1
                        continue
                assert result is not None  # None only when the claim was lost
                self.finish(mail, attempt_id, result, _clock(self.fixed_now))
        self.flush_pending()
        session.commit()

    def _begin(self, mail: Mail, message_id: str, now: datetime) -> int | None:
        attempt_id = self.start_attempt(mail, message_id, now)
        self.session.commit()
        return attempt_id


def _sent_detail(result: SmtpResult) -> str:
    if result.refused_bcc:
        return f"{result.text}; BCC refused: {result.refused_bcc}"
    return result.text


def send_batch(
    session_factory: SessionFactory,
    mail_ids: Sequence[int],
    claim_id: str,
    smtp: SmtpConfig,
    actor: str = "system",
    now: datetime | None = None,
) -> SendSummary:
    """Send the mails of `mail_ids` that `claim_id` still holds. The DAG's mapped task."""
    ids = sorted({int(i) for i in mail_ids})
    session = _pinned_session(session_factory)
    try:
        policy = Policy.load(session)
        start = _clock(now)
        sender = BatchSender(session, claim_id, policy, actor, now)
        stopped = settings.get(session, "mail_server_stopped")
        session.commit()  # SQLite: write first in a fresh transaction (see cycle.plan_run)
        if stopped:
            release_claims(session, ids, claim_id)
            session.commit()
            sender.summary.stopped = True
            return sender.summary
        # Renew the lease (the batch may have waited for a pool slot) and load our mails.
        lease_until = start + timedelta(seconds=policy.lease_seconds)
        mails: list[Mail] = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            session.execute(
                update(Mail)
                .where(Mail.id.in_(chunk), Mail.claimed_by == claim_id)
                .values(lease_until=lease_until)
            )
            mails.extend(
                session.scalars(select(Mail).where(Mail.id.in_(chunk), Mail.claimed_by == claim_id))
            )
        # A retried task finds the in_flight attempt of its killed predecessor: in doubt.
        doubtful = in_flight_mail_ids(session, [m.id for m in mails])
        if doubtful:
            mark_in_doubt(
                session,
                [(m.id, m.status, m.message_id) for m in mails if m.id in doubtful],
                start,
                actor,
            )
            sender.summary.in_doubt += len(doubtful)
        for shop_id in {m.shop_id for m in mails}:
            sender.shop(shop_id)  # read now: the loop's transactions start with a write
        session.commit()
        for m in mails:
            session.expunge(m)  # snapshots: the loop writes with Core statements only
        mails = sorted((m for m in mails if m.id not in doubtful), key=lambda m: m.id)
        sender.summary.skipped += len(ids) - len(mails) - len(doubtful)
        sender.summary.batches = 1
        sender.run(mails, smtp)
        return sender.summary
    finally:
        bind = session.get_bind()
        session.close()
        if isinstance(bind, Connection):
            bind.close()


def _pinned_session(session_factory: SessionFactory) -> Session:
    """A session holding ONE pooled connection for the whole batch.

    A plain session hands its connection back to the pool at every commit, and the
    next checkout pings the server (pool_pre_ping): one wasted round trip per mail.
    """
    probe = session_factory()
    bind = probe.get_bind()
    probe.close()
    if isinstance(bind, Connection):
        return session_factory()
    conn = bind.connect()
    if isinstance(session_factory, sessionmaker):
        return session_factory(bind=conn)
    return Session(bind=conn, expire_on_commit=False)
