"""Sending one batch of claimed mails over one reused SMTP connection (F3, A8, B9, B10).

Exactly-once bookkeeping, per group of `send_commit_group` mails (default 20):
1. an `in_flight` SendAttempt for every mail of the group is written (and the claim
   checked/renewed) and committed together with the outcomes of the previous group —
   one commit per group;
2. the group's SMTP transactions run, one after another on the one connection;
3. their outcomes (attempt + status + event + address health) are written, committed
   with step 1 of the next group.
The rule that matters holds for every mail: its in_flight row is committed before its
DATA. A worker killed between 1 and 3 leaves in_flight attempts that lease recovery
turns into `held` "in doubt" (claim.py) — at most two groups (the one on the wire and
the next, committed meanwhile: see `run`) per lane, never resent blindly; one killed
elsewhere loses nothing committed. A batch runs up to the relay's `connections` lanes
in parallel (PostgreSQL), each with its own store and SMTP connection and this same
loop. The group size trades that
blast radius against commits per mail (a commit per mail halved throughput in
bench/send.py). Another try of the same batch skips mails with an unfinished attempt.

"Sent" means accepted by the SMTP server (B10), not delivered. A bad recipient or an
unsafe header makes only that mail an error (attempt outcome `refused`); the batch goes on.
If the server cannot be reached, every remaining mail of the batch gets a temporary
failure (retried later) without hammering the server once per mail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from automail import address_health, settings
from automail.addresses import check_address, domain_of
from automail.bounce_links import MailSigner
from automail.db import rowcount
from automail.mime import HeaderCache, MailBuildError, copy_recipients, render_bytes
from automail.models import Mail, SendAttempt, Shop
from automail.sending.claim import in_flight_mail_ids, release_claims
from automail.sending.dkim_sign import DkimKeyError, DkimSigner
from automail.sending.pacing import active_backoffs, pacing_table, record_backoff
from automail.sending.relay_slots import release_slots, take_slots
from automail.sending.retry import address_verdict, attempts_allowed, next_attempt
from automail.sending.smtp import (
    Messenger,
    MessengerFactory,
    SmtpConfig,
    SmtpResult,
    SmtpSession,
    SmtpUnavailable,
)
from automail.sending.status import CHUNK, change_status
from automail.sending.summary import SendSummary
from automail.states import ERROR, HELD, SENT

log = logging.getLogger(__name__)
SLOT_WAIT = 60.0  # seconds a batch waits for a free connection slot of its relay
SessionFactory = Callable[[], Session]
Ready = tuple[Mail, str, bytes]  # a built message: (mail, Message-ID, wire bytes)
Outcome = tuple[Mail, int | None, SmtpResult, datetime, dict]  # (mail, attempt id, …)

# PostgreSQL fast path: one statement writes a whole group's in_flight starts, one the
# common "accepted" outcomes of a group; both go out with the previous step's writes as
# ONE round trip, then one commit (synchronous_commit off for that transaction only: a
# crash can lose at most the last few commits of the WAL buffer, never leave a
# half-written mail). Other outcomes and SQLite use the Core statements below; the
# semantics are identical. The statements are built with psycopg2's `mogrify` on the raw
# cursor (the same client-side quoting psycopg2 always does), not through SQLAlchemy:
# binding 200+ named parameters per group cost more CPU than the whole SMTP exchange.
PG_START_SQL = """
WITH v(mail_id, n, mid) AS (VALUES {values}),
l AS (SELECT mails.id FROM mails JOIN v ON mails.id = v.mail_id
  WHERE mails.claimed_by = %(claim)s AND mails.attempt_count = v.n - 1
  FOR NO KEY UPDATE OF mails SKIP LOCKED),
m AS (UPDATE mails SET attempt_count = v.n, lease_until = %(lease)s, message_id = v.mid
  FROM v WHERE mails.id = v.mail_id AND mails.id IN (SELECT id FROM l)
  RETURNING mails.id, mails.attempt_count)
INSERT INTO send_attempts (mail_id, attempt_no, claim_id, started_at, outcome)
  SELECT id, attempt_count, %(claim)s, %(now)s, 'in_flight' FROM m RETURNING mail_id, id
"""
PG_SENT_SQL = """
WITH v(aid, mail_id, n, mid, at, code, enh, msg, from_status, cid, to_addr) AS (VALUES {values}),
a AS (UPDATE send_attempts SET outcome = 'accepted', finished_at = v.at,
  smtp_code = v.code::int, enhanced_code = v.enh::text, message = v.msg::text
  FROM v WHERE send_attempts.id = v.aid),
m AS (UPDATE mails SET status = 'sent', updated_at = v.at, sent_at = v.at,
  next_attempt_at = NULL, last_error = NULL, claimed_by = NULL, lease_until = NULL,
  attempt_count = v.n, message_id = v.mid FROM v WHERE mails.id = v.mail_id),
e AS (INSERT INTO mail_events (mail_id, at, event, from_status, to_status, actor, detail)
  SELECT v.mail_id, v.at, 'sent', v.from_status::text, 'sent', %(actor)s, v.msg::text FROM v)
UPDATE customers SET consecutive_failures = 0 FROM v
  WHERE customers.id = v.cid::bigint AND customers.email = v.to_addr::text
  AND customers.consecutive_failures <> 0
"""
# Two tries of one batch at once (Airflow re-running a mapped task while the first try
# still runs) must never both send a mail: the start is fenced on attempt_count and
# skips a row another transaction is writing (NO KEY UPDATE: FK checks pass it).
SYNC_OFF = b"SET LOCAL synchronous_commit TO OFF;"


def _pg_statement(cur: Any, template: str, params: dict, rows: Sequence[tuple]) -> bytes:
    """`template` with its named params and its `{values}` list as literals."""
    row = b"(" + b",".join([b"%s"] * len(rows[0])) + b")"
    values = b",".join(cur.mogrify(row, r) for r in rows)
    head, tail = template.split("{values}")
    return cur.mogrify(head, params) + values + cur.mogrify(tail, params) + b";"


@dataclass(frozen=True)
class Policy:
    max_retries: int
    backoff: list[int] | int
    lease_seconds: int
    invalid_after: int
    commit_group: int
    domain_backoff: int  # seconds a domain answering 4xx waits (pacing.py)

    @classmethod
    def load(cls, session: Session) -> Policy:
        return cls(
            settings.get(session, "max_retries"),
            settings.get(session, "retry_backoff_seconds"),
            settings.get(session, "lease_seconds"),
            settings.get(session, "invalid_after_failures"),
            max(1, settings.get(session, "send_commit_group")),
            settings.get(session, "domain_backoff_seconds"),
        )


def _pg_fast_path(session: Session) -> bool:
    """PostgreSQL: group statements built with psycopg2 (PG_START_SQL, PG_SENT_SQL)."""
    return session.get_bind().dialect.name == "postgresql"


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
        messenger: MessengerFactory = SmtpSession,
    ) -> None:
        self.session = session
        self.messenger = messenger
        self.claim_id = claim_id
        self.policy = policy
        self.actor = actor
        self.fixed_now = now
        self.summary = SendSummary()
        self.shops: dict[int, Shop] = {}
        self.pg = _pg_fast_path(session)
        self.sent_rows: list[tuple] = []  # PG: "accepted" outcomes not yet written
        self.headers = HeaderCache()  # encoded From/Reply-To, shared by the batch's mails
        self.dkim_keys: dict[str, DkimSigner | DkimKeyError] = {}  # DKIM connection -> key
        self.unavailable: str | None = None  # why the SMTP server cannot be used, once known
        self.signer = MailSigner.load()  # signed return paths and Message-IDs; no key: stop
        now = _clock(now)
        pacing = pacing_table(session)
        self.paced = set(pacing)  # carriers and domain_pacing entries: 4xx -> domain backoff
        self.per_session = {d: p.per_session for d, p in pacing.items() if p.per_session}
        self.waiting = active_backoffs(session, now)  # domain -> until (its mails wait)
        self.refusing: dict[str, str] = {}  # domain -> 4xx reply seen on the wire (to record)

    def shop(self, shop_id: int) -> Shop:
        if shop_id not in self.shops:
            shop = self.session.get(Shop, shop_id)
            assert shop is not None
            self.session.expunge(shop)  # a read-only snapshot: commits never reload it
            self.shops[shop_id] = shop
        return self.shops[shop_id]

    # -- step 1: in flight ----------------------------------------------------------
    def start_group(self, group: Sequence[tuple[Mail, str]], now: datetime) -> dict[int, int]:
        """Write the in_flight attempts of `group` ((mail, message_id) pairs) for the mails
        we still hold, together with the pending outcomes, and commit. Returns
        {mail id: attempt id}; a mail missing from it must not be sent.

        The attempt_count check fences a second process sending the same batch under
        the same claim (Airflow re-running a mapped task while the first try still
        runs): whoever starts the attempt first wins, the other skips the mail.
        """
        lease = now + timedelta(seconds=self.policy.lease_seconds)
        if self.pg:
            rows = [(m.id, m.attempt_count + 1, mid) for m, mid in group]
            params = {"claim": self.claim_id, "lease": lease, "now": now}
            with self._raw_cursor() as cur:
                sql = (
                    SYNC_OFF + self._sent_sql(cur) + _pg_statement(cur, PG_START_SQL, params, rows)
                )
                self.sent_rows = []
                cur.execute(sql)
                started = dict(cur.fetchall())
            self.session.commit()
            return started
        started = {}  # SQLite: no deferred outcomes (sent_rows is PostgreSQL's)
        for mail, message_id in group:
            res = self.session.execute(
                update(Mail)
                .where(
                    Mail.id == mail.id,
                    Mail.claimed_by == self.claim_id,
                    Mail.attempt_count == mail.attempt_count,
                )
                .values(
                    attempt_count=mail.attempt_count + 1, lease_until=lease, message_id=message_id
                )
            )
            if rowcount(res) == 1:
                started[mail.id] = self.session.execute(
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
        self.session.commit()
        return started

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
        if (text := db_text(result.text)) is not result.text:
            result = replace(result, text=text)
        if outcome == "deferred":  # its domain is in backoff: never went on the wire
            if attempt_id is not None:
                self.session.execute(delete(SendAttempt).where(SendAttempt.id == attempt_id))
            self._status_change(
                mail, mail.status, "domain_backoff", result.text, now,
                claimed_by=None, lease_until=None, attempt_count=mail.attempt_count,
                next_attempt_at=self._until(domain_of(mail.to_address), now),
                last_error=result.text,
            )  # fmt: skip
            self.summary.deferred_backoff += 1
            return
        if outcome == "accepted" and self.pg and attempt_id is not None:
            # PG fast path: PG_SENT_SQL writes the attempts, the mails and the events of
            # the group's accepted mails in one statement (flush_pending / start_group).
            self.sent_rows.append(
                (
                    attempt_id,
                    mail.id,
                    attempt_no,
                    message_id or mail.message_id,
                    now,
                    result.code,
                    result.enhanced,
                    _sent_detail(result)[:4000],
                    mail.status,
                    mail.customer_id,
                    mail.to_address,
                )
            )
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
        common: dict[str, Any] = {
            "claimed_by": None,
            "lease_until": None,
            "attempt_count": attempt_no,
        }
        if message_id is not None:
            common["message_id"] = message_id
        change = self._status_change
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

    def _raw_cursor(self) -> Any:
        """A psycopg2 cursor in the session's transaction."""
        raw: Any = self.session.connection().connection.dbapi_connection
        return raw.cursor()

    def _sent_sql(self, cur: Any) -> bytes:
        if not self.sent_rows:
            return b""
        return _pg_statement(cur, PG_SENT_SQL, {"actor": self.actor}, self.sent_rows)

    def flush_pending(self) -> None:
        """Write the deferred "accepted" outcomes on their own (end of batch)."""
        if self.sent_rows:
            with self._raw_cursor() as cur:
                cur.execute(SYNC_OFF + self._sent_sql(cur))
            self.sent_rows = []

    # -- the loop --------------------------------------------------------------------
    def run(self, mails: Sequence[Mail], smtp: SmtpConfig) -> None:
        """Send `mails` in groups, the bookkeeping of one group overlapping the SMTP
        traffic of the previous one (PostgreSQL: in a helper thread; SQLite: in line).

        While group k is on the wire, the helper builds the messages of group k+1, then
        writes and commits the outcomes of group k-1 and the in_flight attempts of group
        k+1; group k+1 is sent only after that commit, so every DATA still follows its
        mail's committed in_flight row.
        """
        size = self.policy.commit_group
        groups = [mails[i : i + size] for i in range(0, len(mails), size)]
        pool = ThreadPoolExecutor(1, "automail-commit") if self.pg else None
        done: list[Outcome] = []  # sent, not yet written
        conn = self.messenger(smtp, self.per_session)
        with closing(conn), pool or nullcontext():
            ready, refused = self._prepare(groups[0]) if groups else ([], [])
            started = self._write(done, refused, ready)
            for k in range(len(groups)):
                current = ready
                job = partial(self._next_group, groups[k + 1] if k + 1 < len(groups) else [], done)
                pending = pool.submit(job) if pool is not None else None
                sent = self._send_group(current, started, conn)
                ready, started = pending.result() if pending is not None else job()
                done = sent
            self._write(done, [], [])

    def _next_group(
        self, mails: Sequence[Mail], done: list[Outcome]
    ) -> tuple[list[Ready], dict[int, int]]:
        """The helper's share while a group is on the wire: build the next group, then
        write the outcomes so far and the next group's in_flight starts."""
        ready, refused = self._prepare(mails)
        return ready, self._write(done, refused, ready)

    def _prepare(self, mails: Sequence[Mail]) -> tuple[list[Ready], list[Outcome]]:
        """Check and build every message of a group: (ready to send, refused outcomes)."""
        now = _clock(self.fixed_now)
        ready: list[Ready] = []
        refused: list[Outcome] = []
        for mail in mails:
            if self.unavailable is not None:
                result = SmtpResult("temp_fail", None, None, self.unavailable)
                refused.append((mail, None, result, now, {}))
                continue
            waiting = self._backing_off(mail)
            if waiting is not None:
                refused.append((mail, None, waiting, now, {"outcome": "deferred"}))
                continue
            # Whatever one mail holds fails that mail only: a build error names the field
            # and value; anything else (a bug meeting odd data) is refused with its text
            # rather than stopping the batch and every mail queued behind this one.
            address_reason = message_id = None
            try:
                shop = self.shop(mail.shop_id)
                mid = mail.message_id or self.signer.message_id(mail, shop.code)
                if len(mid) > MESSAGE_ID_MAX:  # a very long From domain: the column's limit
                    raise MailBuildError("message_id", mid, f"over {MESSAGE_ID_MAX} characters")
                message_id = mail.message_id = mid
                address_reason = check_address(mail.to_address) if shop.address_check else None
                reason = address_reason and f"to_address: {address_reason}"
                if reason is None:
                    data = render_bytes(mail, shop, now, self.headers)
                    if shop.dkim_conn_id:
                        data = self.dkim_key(shop.dkim_conn_id).sign(data)
                    ready.append((mail, message_id, data))
                    continue
            except (MailBuildError, DkimKeyError) as exc:
                reason = f"cannot build the message: {exc}"
            except Exception as exc:
                log.exception("batch %s: mail %s cannot be built", self.claim_id, mail.id)
                reason = f"cannot build the message: {type(exc).__name__}: {exc!r}"
            result = SmtpResult("refused", None, None, db_text(reason))
            extra = {"address_reason": address_reason, "message_id": message_id}
            refused.append((mail, None, result, now, extra))
        return ready, refused

    def dkim_key(self, conn_id: str) -> DkimSigner:
        """The DKIM key of `conn_id`, read once per batch; a failure is kept and raised
        for each of the shop's mails (error naming the connection, never unsigned)."""
        if conn_id not in self.dkim_keys:
            try:
                self.dkim_keys[conn_id] = DkimSigner.resolve(conn_id)
            except DkimKeyError as exc:
                self.dkim_keys[conn_id] = exc
        found = self.dkim_keys[conn_id]
        if isinstance(found, DkimKeyError):
            raise found
        return found

    def _write(
        self, done: list[Outcome], refused: list[Outcome], ready: list[Ready]
    ) -> dict[int, int]:
        """One transaction: outcomes so far, then the in_flight starts of `ready`; commit.
        Returns {mail id: attempt id} of the started mails."""
        now = _clock(self.fixed_now)
        for domain, reason in list(self.refusing.items()):
            if domain not in self.waiting or self.waiting[domain] <= now:
                base = self.policy.domain_backoff
                self.waiting[domain] = record_backoff(self.session, domain, now, base, reason)
        for mail, attempt_id, result, at, extra in (*done, *refused):
            self.finish(mail, attempt_id, result, at, **extra)
        if ready:
            return self.start_group([(m, mid) for m, mid, _ in ready], _clock(self.fixed_now))
        self.flush_pending()
        self.session.commit()
        return {}

    def _send_group(
        self, ready: list[Ready], started: dict[int, int], conn: Messenger
    ) -> list[Outcome]:
        """SMTP only: no database access here (the helper thread owns the session)."""
        outcomes: list[Outcome] = []
        for mail, _message_id, data in ready:
            attempt_id = started.get(mail.id)
            if attempt_id is None:  # claim lost or another try started it: not ours
                self.summary.skipped += 1  # only this thread counts skips
                continue
            waiting = self._backing_off(mail)
            if waiting is not None:  # a 4xx from its domain earlier in this group
                outcomes.append((mail, attempt_id, waiting, _clock(self.fixed_now),
                                 {"outcome": "deferred"}))  # fmt: skip
                continue
            if self.unavailable is None:
                try:
                    result = conn.send(
                        self.signer.envelope_sender(mail),
                        mail.to_address.strip(),
                        copy_recipients(mail, self.shops[mail.shop_id]),  # cached by _prepare
                        data,
                    )
                except SmtpUnavailable as exc:
                    self.unavailable = str(exc)
                    log.warning("batch %s: %s", self.claim_id, self.unavailable)
            if self.unavailable is not None:
                result = SmtpResult("temp_fail", None, None, self.unavailable)
            elif _domain_refusal(result) and domain_of(mail.to_address) in self.paced:
                self.refusing.setdefault(domain_of(mail.to_address), result.text)
            outcomes.append((mail, attempt_id, result, _clock(self.fixed_now), {}))
        return outcomes

    def _until(self, domain: str, now: datetime) -> datetime:
        return self.waiting.get(domain) or now + timedelta(seconds=self.policy.domain_backoff)

    def _backing_off(self, mail: Mail) -> SmtpResult | None:
        """A `deferred` result if the mail's domain waits (recorded, or refusing now)."""
        domain = domain_of(mail.to_address)
        now = _clock(self.fixed_now)
        if domain in self.refusing or self.waiting.get(domain, now) > now:
            until = self._until(domain, now)
            why = self.refusing.get(domain, "earlier 4xx replies")
            text = (
                f"domain {domain} asked us to slow down ({why}); waits until "
                f"{until.isoformat(timespec='seconds')}, no retry used"
            )
            return SmtpResult("deferred", None, None, text)
        return None


def _domain_refusal(result: SmtpResult) -> bool:
    """A 4xx reply about the recipient or the message (not the sender, not the
    connection): the recipient's domain is throttling us."""
    return (
        result.outcome == "temp_fail"
        and result.code is not None
        and 400 <= result.code < 500
        and not result.text.startswith("MAIL FROM")
    )


MESSAGE_ID_MAX = 255  # models.Mail.message_id is String(255)


def db_text(text: str) -> str:
    """`text` as every store can hold it: NUL (PostgreSQL refuses it in text) and lone
    surrogates written as escapes, so recording one odd outcome never fails the batch."""
    if "\0" in text:
        text = text.replace("\0", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _sent_detail(result: SmtpResult) -> str:
    if result.refused_bcc:
        return f"{result.text}; Cc/BCC refused: {result.refused_bcc}"
    return result.text


def send_batch(
    session_factory: SessionFactory,
    mail_ids: Sequence[int],
    claim_id: str,
    smtp: SmtpConfig,
    actor: str = "system",
    now: datetime | None = None,
    messenger: MessengerFactory = SmtpSession,
) -> SendSummary:
    """Send the mails of `mail_ids` that `claim_id` still holds. The DAG's mapped task.
    `messenger` makes the batch's SMTP sessions (tests pass fakes)."""
    ids = sorted({int(i) for i in mail_ids})
    session = _pinned_session(session_factory)
    try:
        policy = Policy.load(session)
        start = _clock(now)
        sender = BatchSender(session, claim_id, policy, actor, now, messenger)
        stopped = settings.get(session, "mail_server_stopped")
        session.commit()  # SQLite: write first in a fresh transaction (see cycle.plan_run)
        if stopped:
            release_claims(session, ids, claim_id)
            session.commit()
            sender.summary.stopped = True
            return sender.summary
        # Renew the lease if half of it is gone (the batch waited for a pool slot); a
        # fresh claim is left alone: every rewrite of a mail row updates all its indexes.
        lease_until = start + timedelta(seconds=policy.lease_seconds)
        renew_before = start + timedelta(seconds=policy.lease_seconds / 2)
        mails: list[Mail] = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            session.execute(
                update(Mail)
                .where(
                    Mail.id.in_(chunk),
                    Mail.claimed_by == claim_id,
                    Mail.lease_until < renew_before,
                )
                .values(lease_until=lease_until)
            )
            mails.extend(
                session.scalars(select(Mail).where(Mail.id.in_(chunk), Mail.claimed_by == claim_id))
            )
        # An in_flight attempt under our claim belongs to another try of this batch:
        # a killed one (an Airflow retry after a crash) or a live one (a retry started
        # while the first still runs). Either way the mail is not ours to send: skip it.
        # A live try finishes it; a dead one's lease lapses and lease recovery holds it
        # in doubt (claim.recover_leases) — never resent, and never held while its
        # sender may still be completing it.
        busy = in_flight_mail_ids(session, [m.id for m in mails])
        if busy:
            log.warning(
                "batch %s: %d mail(s) have an unfinished attempt of another try; skipped, "
                "lease recovery holds them in doubt if that try is gone",
                claim_id,
                len(busy),
            )
        for shop_id in {m.shop_id for m in mails}:
            sender.shop(shop_id)  # read now: the loop's transactions start with a write
        session.commit()
        for m in mails:
            session.expunge(m)  # snapshots: the loop writes with Core statements only
        mails = sorted((m for m in mails if m.id not in busy), key=lambda m: m.id)
        sender.summary.skipped += len(ids) - len(mails)
        sender.summary.batches = 1
        lanes = _lanes(len(mails), smtp, policy, sender.pg)
        if mails:
            lanes = take_slots(session, smtp.name, lanes, smtp.max_connections, SLOT_WAIT)
        if mails and lanes == 0:  # the relay is at its limit: leave them to the next run
            release_claims(session, [m.id for m in mails], claim_id)
            session.commit()
            sender.summary.skipped += len(mails)
            log.warning("batch %s: relay %r full (%d connections)", claim_id, smtp.name,
                        smtp.max_connections)  # fmt: skip
        elif lanes == 1:
            sender.run(mails, smtp)
        else:
            shop_ids = {m.shop_id for m in mails}
            lane = partial(
                _send_lane, session_factory, claim_id, policy, actor, now, shop_ids, messenger
            )
            with ThreadPoolExecutor(lanes, "automail-lane") as pool:
                jobs = [pool.submit(lane, mails[i::lanes], smtp) for i in range(lanes)]
                for job in jobs:
                    sender.summary.merge(job.result())
        return sender.summary
    finally:
        bind = session.get_bind()
        try:
            release_slots(session)
        except Exception:  # a broken connection: closing it frees its slots anyway
            log.warning("batch %s: could not release relay slots explicitly", claim_id)
        session.close()
        if isinstance(bind, Connection):
            bind.close()


def _lanes(n_mails: int, smtp: SmtpConfig, policy: Policy, pg: bool) -> int:
    """SMTP connections for one batch: the relay's `connections`, no more than there
    are groups of mails to keep them busy; one on SQLite (a single writer: parallel
    lanes would only queue on its lock)."""
    if not pg:
        return 1
    groups = -(-n_mails // policy.commit_group)
    return max(1, min(smtp.connections, smtp.max_connections, groups))


def _send_lane(
    session_factory: SessionFactory,
    claim_id: str,
    policy: Policy,
    actor: str,
    now: datetime | None,
    shop_ids: set[int],
    messenger: MessengerFactory,
    mails: Sequence[Mail],
    smtp: SmtpConfig,
) -> SendSummary:
    """One of a batch's parallel lanes: its own store connection, its own SMTP
    connection, the same group loop (in_flight committed before each DATA)."""
    session = _pinned_session(session_factory)
    try:
        sender = BatchSender(session, claim_id, policy, actor, now, messenger)
        for shop_id in shop_ids:
            sender.shop(shop_id)
        session.commit()
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
