"""Claiming due mails with a lease (F3), the cap split (B7) and lease recovery.

Due = mode auto, not claimed, due_at reached, and either unsent (next_attempt_at
unset or reached) or error with retries left whose backoff has elapsed.

PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED` then `claimed_by/lease_until` in the
same transaction, so two runs or workers never take the same mail. SQLite: the
single-writer lock (`db.take_write_lock`) first, then the same select/update.

Recovery rule (exactly once): a mail whose lease lapsed goes back to the queue,
unless it has an `in_flight` attempt, i.e. its worker died between handing the
message to the server and recording the reply. The server may have accepted it, so
such a mail is `held` "in doubt" for a human to check, never resent blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from automail.db import rowcount, take_write_lock
from automail.models import Mail, SendAttempt
from automail.sending.ratelimit import DomainLimiter
from automail.sending.status import CHUNK, change_status_many, record_events
from automail.states import (
    ACTION_FROM,
    CAMPAIGN,
    ERROR,
    FOLLOW_UP,
    HELD,
    MANUAL,
    NOTICE,
    ORDER_CONFIRMATION,
    SHIPPING_NOTICE,
    STEP,
    UNSENT,
)

# Priority lanes (H3): the order a run claims in, so the cap never holds back a shop's
# order confirmation for a newsletter. Lower goes first; ties by id (oldest first).
PRIORITY = case(
    (Mail.kind.in_((ORDER_CONFIRMATION, SHIPPING_NOTICE, NOTICE, MANUAL)), 0),
    (Mail.kind == FOLLOW_UP, 1),
    (Mail.kind == STEP, 2),
    else_=3,  # newsletters
)
# Bulk kinds over the cap wait for the next run (they passed review as a campaign or a
# sequence); everything else over the cap is held with a notice (B7).
BULK_KINDS = (CAMPAIGN, STEP)


def due_filter(now: datetime, max_retries: int):  # noqa: ANN201 (SQL expression)
    unsent = and_(
        Mail.status == UNSENT, or_(Mail.next_attempt_at.is_(None), Mail.next_attempt_at <= now)
    )
    retry = and_(
        Mail.status == ERROR,
        Mail.next_attempt_at.is_not(None),
        Mail.next_attempt_at <= now,
        Mail.attempt_count <= max_retries,
    )
    # A newsletter mail is sendable only once its campaign released it (allowed hours,
    # quota): `due_at` is its release time and stays NULL until then.
    released = or_(Mail.due_at <= now, and_(Mail.due_at.is_(None), Mail.kind != CAMPAIGN))
    return and_(
        Mail.mode == "auto",
        Mail.claimed_by.is_(None),
        released,
        or_(unsent, retry),
    )


def _lock(session: Session, stmt):  # noqa: ANN001, ANN202
    """FOR UPDATE SKIP LOCKED on PostgreSQL; the SQLite write lock otherwise."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=Mail)
    take_write_lock(session)
    return stmt


def _set_claim(session: Session, ids: Sequence[int], claim_id: str, lease_until: datetime) -> None:
    for start in range(0, len(ids), CHUNK):
        session.execute(
            update(Mail)
            .where(Mail.id.in_(ids[start : start + CHUNK]))
            .values(claimed_by=claim_id, lease_until=lease_until)
        )


@dataclass
class RunClaim:
    claimed: list[int] = field(default_factory=list)
    held_by_shop: dict[int, int] = field(default_factory=dict)  # over the cap
    deferred: int = 0  # over a domain's rate: left unsent for the next run
    deferred_cap: int = 0  # newsletter/step mails over the cap: left for the next run

    @property
    def held(self) -> int:
        return sum(self.held_by_shop.values())


def claim_for_run(
    session: Session,
    claim_id: str,
    now: datetime,
    *,
    cap: int,
    lease_seconds: int,
    max_retries: int,
    limiter: DomainLimiter | None = None,
    limit: int | None = None,
    actor: str = "system",
) -> RunClaim:
    """Claim every due mail up to `cap`; hold the due rest (B7). Caller commits.

    `limit` (tests, concurrent claim loops) claims at most that many and holds nothing.
    """
    stmt = (
        select(Mail.id, Mail.shop_id, Mail.to_address, Mail.status, Mail.kind)
        .where(due_filter(now, max_retries))
        .order_by(PRIORITY, Mail.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = session.execute(_lock(session, stmt)).all()
    limiter = limiter or DomainLimiter(0, 0)
    result = RunClaim()
    over: list[tuple[int, str]] = []
    for mail_id, shop_id, to_address, status, kind in rows:
        if not limiter.allow(to_address):
            result.deferred += 1
        elif len(result.claimed) < cap:
            result.claimed.append(mail_id)
        elif limit is not None:
            continue
        elif kind in BULK_KINDS:
            result.deferred_cap += 1
        else:
            over.append((mail_id, status))
            result.held_by_shop[shop_id] = result.held_by_shop.get(shop_id, 0) + 1
    _set_claim(session, result.claimed, claim_id, now + timedelta(seconds=lease_seconds))
    if over:
        change_status_many(
            session,
            over,
            HELD,
            "held_cap",
            actor,
            f"send cap of {cap} mails per run reached in run {claim_id}; release to send",
            now,
            next_attempt_at=None,
        )
    return result


def claim_ids(
    session: Session,
    mail_ids: Sequence[int],
    claim_id: str,
    now: datetime,
    lease_seconds: int,
    actor: str,
) -> tuple[list[int], dict[int, str]]:
    """Claim these mails for a send by hand (B4). Returns (claimed, refused {id: reason}).

    Allowed from `ACTION_FROM["send"]` and `["resend"]`; a resend first puts the mail
    back to unsent (with an event and a fresh Message-ID), so the new try is a new
    attempt on the same mail.
    """
    from automail.bounce_links import MailSigner

    wanted = list(dict.fromkeys(int(i) for i in mail_ids))
    signer = MailSigner()  # a resend's fresh Message-ID is signed too
    stmt = select(Mail).where(Mail.id.in_(wanted)).order_by(Mail.id)
    found = {m.id: m for m in session.scalars(_lock(session, stmt))}
    claimed: list[int] = []
    refused: dict[int, str] = {}
    for mail_id in wanted:
        mail = found.get(mail_id)
        if mail is None:
            refused[mail_id] = f"mail {mail_id}: not found, or being claimed by another sender"
            continue
        if mail.claimed_by is not None:
            refused[mail_id] = f"mail {mail_id}: being sent by {mail.claimed_by}"
            continue
        if mail.status in ACTION_FROM["resend"]:
            from automail.models import Shop

            shop = session.get(Shop, mail.shop_id)
            mail.message_id = signer.message_id(
                mail, shop.code if shop else None, resend=mail.attempt_count
            )
            record_events(session, [(mail.id, mail.status)], UNSENT, "resend", actor, None, now)
            mail.status, mail.next_attempt_at, mail.last_error = UNSENT, None, None
        elif mail.status not in ACTION_FROM["send"]:
            allowed = ", ".join((*ACTION_FROM["send"], *ACTION_FROM["resend"]))
            refused[mail_id] = (
                f"mail {mail_id}: cannot send a mail whose status is '{mail.status}' "
                f"(allowed from: {allowed})"
            )
            continue
        mail.claimed_by, mail.lease_until = claim_id, now + timedelta(seconds=lease_seconds)
        claimed.append(mail_id)
    session.flush()
    return claimed, refused


def in_doubt_detail(message_id: str | None) -> str:
    return (
        f"in doubt: worker died during the SMTP transaction (Message-ID {message_id}); "
        "check before resending"
    )


def mark_in_doubt(
    session: Session, rows: Sequence[tuple[int, str, str | None]], now: datetime, actor: str
) -> None:
    """rows: (mail_id, status, message_id) with an unfinished in_flight attempt."""
    for mail_id, status, message_id in rows:
        detail = in_doubt_detail(message_id)
        session.execute(
            update(SendAttempt)
            .where(SendAttempt.mail_id == mail_id, SendAttempt.outcome == "in_flight")
            .values(outcome="in_doubt", finished_at=now, message=detail)
        )
        change_status_many(
            session,
            [(mail_id, status)],
            HELD,
            "in_doubt",
            actor,
            detail,
            now,
            last_error=detail,
            claimed_by=None,
            lease_until=None,
            next_attempt_at=None,
        )


def in_flight_mail_ids(session: Session, mail_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(mail_ids), CHUNK):
        found.update(
            session.scalars(
                select(SendAttempt.mail_id).where(
                    SendAttempt.mail_id.in_(mail_ids[start : start + CHUNK]),
                    SendAttempt.outcome == "in_flight",
                )
            )
        )
    return found


@dataclass
class Recovery:
    released: int = 0
    in_doubt: list[int] = field(default_factory=list)


def recover_leases(session: Session, now: datetime, actor: str = "system") -> Recovery:
    """Release lapsed leases; hold in-doubt mails (see module doc). Caller commits."""
    stmt = select(Mail.id, Mail.status, Mail.message_id).where(
        Mail.claimed_by.is_not(None), Mail.lease_until < now
    )
    rows = session.execute(_lock(session, stmt)).all()
    result = Recovery()
    if not rows:
        return result
    doubtful = in_flight_mail_ids(session, [r.id for r in rows])
    mark_in_doubt(session, [tuple(r) for r in rows if r.id in doubtful], now, actor)
    result.in_doubt = sorted(doubtful)
    back = [(r.id, r.status) for r in rows if r.id not in doubtful]
    for start in range(0, len(back), CHUNK):
        chunk = back[start : start + CHUNK]
        session.execute(
            update(Mail)
            .where(Mail.id.in_([i for i, _ in chunk]))
            .values(claimed_by=None, lease_until=None)
        )
        for status in {s for _, s in chunk}:
            record_events(
                session,
                [(i, s) for i, s in chunk if s == status],
                status,
                "lease_expired",
                actor,
                "claim lapsed before sending; back in the queue",
                now,
            )
    result.released = len(back)
    return result


def release_claims(session: Session, mail_ids: Sequence[int], claim_id: str) -> int:
    """Give back claims that were not used (server stopped mid-run, lost batch)."""
    n = 0
    for start in range(0, len(mail_ids), CHUNK):
        n += rowcount(
            session.execute(
                update(Mail)
                .where(Mail.id.in_(mail_ids[start : start + CHUNK]), Mail.claimed_by == claim_id)
                .values(claimed_by=None, lease_until=None)
            )
        )
    return n


def release_held(
    session: Session, mail_ids: Sequence[int], actor: str, now: datetime | None = None
) -> tuple[list[int], dict[int, str]]:
    """Held → unsent, so the next run sends them. Returns (released, refused {id: reason})."""
    from datetime import UTC

    now = now or datetime.now(UTC)
    wanted = list(dict.fromkeys(int(i) for i in mail_ids))
    stmt = select(Mail.id, Mail.status).where(Mail.id.in_(wanted))
    found = dict(session.execute(_lock(session, stmt)).all())
    refused = {}
    ok = []
    for mail_id in wanted:
        status = found.get(mail_id)
        if status is None:
            refused[mail_id] = f"mail {mail_id}: not found"
        elif status not in ACTION_FROM["release"]:
            refused[mail_id] = (
                f"mail {mail_id}: cannot release a mail whose status is '{status}' "
                f"(allowed from: {', '.join(ACTION_FROM['release'])})"
            )
        else:
            ok.append(mail_id)
    change_status_many(
        session,
        [(i, HELD) for i in ok],
        UNSENT,
        "released",
        actor,
        "released from hold",
        now,
        next_attempt_at=None,
        claimed_by=None,
        lease_until=None,
    )
    return ok, refused
