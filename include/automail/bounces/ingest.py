"""Taking in received bounces (SPEC E1–E3): parse, match to the mail, record, apply.

One `Bounce` row per recipient of each received message, fingerprinted by
sha256(raw message + recipient), so ingesting the same message again changes nothing.
Nothing is dropped: a message that names no recipient is one row without recipient, a
bounce that matches no mail is kept with `mail_id` NULL and counted as unmatched.

Matching (`Bounce.matched_by`, `Bounce.trust`). Anyone can mail the bounce mailbox, and
mail ids are sequential, so only a per-mail token signed with the shop's key
(automail.bounce_links) makes a link `signed`, first hit wins:
1. `verp`: the bounce was addressed to the mail's signed return path
   `local+{id}-{token}@domain` (the sender's MAIL FROM; found in To, Delivered-To,
   X-Original-To, Envelope-To, X-Envelope-To or the returned original's Return-Path);
2. `message-id`: the returned Message-ID (or an auto-reply's In-Reply-To) carries the
   mail's token: `<automail.{id}-{token}.…@…>`.
Without a valid token the bounce is still linked to a mail for the record, trust
`unsigned` (or `bad_signature` when a token was there but did not verify), first hit
wins: `x-automail-id` (the returned X-Automail-Id), `message-id` (equal to
`Mail.message_id`, or one of ours by its id), `verp` (an unsigned or wrongly signed
return path), `recipient` (the newest mail *sent* to the bounced address within
`bounce_fallback_days`, for bounces that return no headers).

Effect (`Bounce.effect`). Auto-replies, feedback reports, delivery notices and unknown
messages (outcome none) are `ignored`: kept for the record, never change anything. A hard
or soft bounce that matched no mail is `recorded`. A matched one changes its mail and
the mail's To address only when it is `signed` and names that To address; otherwise:
- `untrusted`: linked without a valid signature: recorded, changes nothing;
- `no_recipient`: signed, but the bounce names no recipient: recorded, changes nothing;
- `other_recipient`: about another recipient of the mail (a BCC, or a forged one naming
  a victim): recorded, changes nothing.
Signed and naming the mail's recipient:
- `applied`: the mail was `sent` (accepted by the server, B10) and now has
  `bounce_outcome` hard|soft (hard wins over soft), a `bounced` MailEvent with the code
  and reason, and the address health update: a hard bounce cleans the address (no more
  newsletters), failures in a row — counted over the newest sent mails, see
  `address_health.raise_failure_count` — invalidate it. The status stays `sent`: B10
  says sent means accepted, campaign counts already read `bounce_outcome` as an error,
  and a bounced mail still counts against the quota (C9).
- `recorded`: the mail is not `sent` any more (resent, or failed at once, which the
  sender counted already): outcome and event are kept, address health is untouched;
  also a second bounce for the same mail (counted once).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from automail import address_health, settings
from automail.bounce_links import Claim, MailSigner, message_id_claim, verp_claims
from automail.bounces.mailbox import BounceSource, Incoming, open_source
from automail.bounces.model import BounceRecipient, ParsedBounce
from automail.bounces.parser import parse_bounce
from automail.db import take_write_lock
from automail.models import Bounce, Mail, MailEvent
from automail.states import SENT

ACTOR = "automail_bounces"
SIGNED, UNSIGNED, BAD_SIGNATURE = "signed", "unsigned", "bad_signature"
FAILURES = ("hard", "soft")
STREAK_WINDOW = 50  # newest sent mails looked at when counting failures in a row
MAX_CLAIMS = 16  # a real bounce has 1–3; a hostile one may not make us check thousands

_VERP_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")
log = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]


@dataclass
class IngestSummary:
    """Counts of one ingest run; new rows are ingested = matched + unmatched
    = hard + soft + ignored."""

    messages: int = 0  # messages read from the source
    ingested: int = 0  # new bounce rows
    duplicates: int = 0  # rows recorded before (re-ingest): nothing changed
    matched: int = 0
    unmatched: int = 0
    hard: int = 0
    soft: int = 0
    ignored: int = 0  # outcome none: auto-replies, reports, unknown messages
    applied: int = 0  # rows that changed a mail and its address health
    untrusted: int = 0  # failures linked without a valid signature: recorded, not applied
    unmatched_ids: list[int] = field(default_factory=list)  # Bounce ids, for the report
    failed: list[str] = field(default_factory=list)  # messages left in the mailbox, why

    def merge(self, other: IngestSummary) -> None:
        for key, value in asdict(other).items():  # ints add up, lists concatenate
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self, max_ids: int = 100) -> dict:
        """JSON-ready; long id lists are cut (the CLI's `bounces list --unmatched` has all)."""
        out = asdict(self)
        out["unmatched_ids"] = out["unmatched_ids"][:max_ids]
        out["failed"] = out["failed"][:max_ids]
        return out


def fingerprint(raw: bytes, recipient: str | None) -> str:
    return hashlib.sha256(raw + b"\0" + (recipient or "").encode()).hexdigest()


# -- matching -------------------------------------------------------------------------


def _mail(session: Session, mail_id: str | int | None) -> Mail | None:
    try:
        return session.get(Mail, int(str(mail_id).strip())) if mail_id else None
    except (TypeError, ValueError, OverflowError):
        return None


def _by_message_id(session: Session, message_id: str | None) -> Mail | None:
    if not message_id:
        return None
    bare = message_id.strip().strip("<>")
    mail = session.scalars(
        select(Mail).where(Mail.message_id.in_([f"<{bare}>", bare])).order_by(Mail.id).limit(1)
    ).first()
    if mail is None and (claim := message_id_claim(bare)) is not None:
        mail = _mail(session, claim.mail_id)  # an earlier Message-ID of a mail resent since
    return mail


def claims_of(parsed: ParsedBounce, raw: bytes) -> list[Claim]:
    """Every return-path and Message-ID claim of one message (read once per message)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:200_000])
    found = []
    for name in _VERP_HEADERS:
        for value in headers.get_all(name) or []:
            found.extend(verp_claims(str(value)))
    found.extend(verp_claims(parsed.original_headers.get("return-path", "")))
    if (claim := message_id_claim(parsed.original_message_id)) is not None:
        found.append(claim)
    return found[:MAX_CLAIMS]


def _by_recipient(session: Session, candidates: list[str], now: datetime, days: int) -> Mail | None:
    if not candidates:
        return None
    return session.scalars(
        select(Mail)
        .where(
            Mail.to_address.in_(candidates),
            Mail.status == SENT,
            Mail.sent_at <= now,
            Mail.sent_at >= now - timedelta(days=days),
        )
        .order_by(Mail.sent_at.desc(), Mail.id.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True)
class Link:
    """A bounce's mail and how far the link can be trusted (module docstring)."""

    mail: Mail | None
    how: str | None  # verp | message-id | x-automail-id | recipient
    trust: str | None  # signed | unsigned | bad_signature


def match(
    session: Session,
    parsed: ParsedBounce,
    recipient: str | None,
    claims: list[Claim],
    now: datetime,
    fallback_days: int,
    signer: MailSigner,
) -> Link:
    """The mail of one recipient of a bounce: signed if a claim's token verifies, else
    the unsigned evidence (for the record only); Link(None, None, …) when nothing matched."""
    bad = False
    for claim in claims:
        if claim.token is None:
            continue
        mail = _mail(session, claim.mail_id)
        if mail is not None and signer.valid(mail.shop_id, mail.id, claim.token):
            return Link(mail, claim.via, SIGNED)
        bad = True
    trust = BAD_SIGNATURE if bad else UNSIGNED
    mail = _mail(session, parsed.original_headers.get("x-automail-id"))
    if mail is not None:
        return Link(mail, "x-automail-id", trust)
    mail = _by_message_id(session, parsed.original_message_id)
    if mail is not None:
        return Link(mail, "message-id", trust)
    for claim in claims:
        mail = _mail(session, claim.mail_id) if claim.via == "verp" else None
        if mail is not None:
            return Link(mail, "verp", trust)
    if recipient:
        # The returned To keeps the spelling we stored (the parser lowercases recipients).
        spelled = [a for a in _original_to(parsed) if a.lower() == recipient]
        mail = _by_recipient(session, [recipient, *spelled], now, fallback_days)
        if mail is not None:
            return Link(mail, "recipient", trust)
    return Link(None, None, BAD_SIGNATURE if bad else None)


def _original_to(parsed: ParsedBounce) -> list[str]:
    text = parsed.original_headers.get("to", "")
    return re.findall(r"[^\s<>,;:\"']+@[^\s<>,;:\"']+", text) if text else []


# -- effect ---------------------------------------------------------------------------


def _describe(r: BounceRecipient) -> str:
    code = " ".join(str(c) for c in (r.smtp_code, r.status) if c)
    head = f"{r.outcome} bounce {code} {r.reason}".replace("  ", " ")
    return f"{head}: {r.diagnostic}" if r.diagnostic else head


def _effect(session: Session, link: Link, r: BounceRecipient, now: datetime, threshold: int) -> str:
    """What a hard/soft bounce does: nothing unless signed and naming the mail's recipient."""
    if link.mail is None:
        return "recorded"
    if link.trust != SIGNED:
        return "untrusted"
    if not r.recipient:
        return "no_recipient"
    return _apply(session, link.mail, r, now, threshold)


def effect_text(effect: str | None, trust: str | None) -> str:
    """An effect as operators read it (CLI lists, the mail's detail screen)."""
    if effect == "untrusted":
        why = "wrong signature" if trust == BAD_SIGNATURE else "unsigned"
        return f"recorded, not applied: {why}"
    if effect == "no_recipient":
        return "recorded, not applied: names no recipient"
    if effect == "other_recipient":
        return "recorded, not applied: another recipient"
    return effect or ""


def _apply(session: Session, mail: Mail, r: BounceRecipient, now: datetime, threshold: int) -> str:
    """Apply a hard/soft bounce to its matched mail; returns the effect (module docstring)."""
    if r.recipient != mail.to_address.strip().lower():
        return "other_recipient"
    previous = mail.bounce_outcome
    outcome = "hard" if "hard" in (previous, r.outcome) else "soft"
    detail = _describe(r)[:2000]
    session.execute(
        update(Mail).where(Mail.id == mail.id).values(bounce_outcome=outcome, updated_at=now)
    )
    session.execute(
        insert(MailEvent).values(
            mail_id=mail.id,
            at=now,
            event="bounced",
            from_status=mail.status,
            to_status=mail.status,
            actor=ACTOR,
            detail=detail,
        )
    )
    set_committed_value(mail, "bounce_outcome", outcome)  # the UPDATE above wrote it
    if mail.status != SENT:
        return "recorded"
    reason = f"bounce {r.reason}: {r.diagnostic or r.status or r.smtp_code}"[:1000]
    if previous is None:
        address_health.record_result(
            session, mail.customer_id, mail.to_address, r.outcome, reason, threshold=threshold
        )
        streak = _failures_in_a_row(session, mail)
        address_health.raise_failure_count(
            session, mail.customer_id, mail.to_address, streak, reason, threshold
        )
        return "applied"
    if previous == "soft" and r.outcome == "hard":
        address_health.mark_cleaned(session, mail.customer_id, mail.to_address, reason)
        return "applied"
    return "recorded"


def _failures_in_a_row(session: Session, mail: Mail) -> int:
    """Bounced mails in a row among the newest sent mails of this customer and address.

    Mails that failed at once (status error) are left out: the sender counted those it
    blames on the address, and leaving them out never blames an address for our own
    server's trouble.
    """
    if mail.customer_id is None:
        return 0
    rows = session.execute(
        select(Mail.bounce_outcome)
        .where(
            Mail.customer_id == mail.customer_id,
            Mail.to_address == mail.to_address,
            Mail.status == SENT,
            Mail.sent_at.is_not(None),
        )
        .order_by(Mail.sent_at.desc(), Mail.id.desc())
        .limit(STREAK_WINDOW)
    ).scalars()
    streak = 0
    for outcome in rows:
        if outcome is None:
            break
        streak += 1
    return streak


# -- one message ----------------------------------------------------------------------


def _recipients(parsed: ParsedBounce) -> list[BounceRecipient]:
    """One per distinct recipient; a message naming none is kept as one row."""
    seen: dict[str | None, BounceRecipient] = {}
    for r in parsed.recipients:
        seen.setdefault(r.recipient, r)
    if not seen:
        seen[None] = BounceRecipient(None, "none", None, None, parsed.kind, "")
    return list(seen.values())


def ingest_message(
    session: Session,
    raw: bytes,
    source: str | None = None,
    now: datetime | None = None,
    signer: MailSigner | None = None,
) -> IngestSummary:
    """Record and apply one received message (no commit). Idempotent per message."""
    now = now or datetime.now(UTC)
    signer = signer or MailSigner()
    out = IngestSummary(messages=1)
    parsed = parse_bounce(raw)
    claims = claims_of(parsed, raw)
    rows = [(r, fingerprint(raw, r.recipient)) for r in _recipients(parsed)]
    known = set(
        session.scalars(
            select(Bounce.fingerprint).where(Bounce.fingerprint.in_([fp for _, fp in rows]))
        )
    )
    fallback_days = settings.get(session, "bounce_fallback_days")
    threshold = settings.get(session, "invalid_after_failures")
    for r, fp in rows:
        if fp in known:
            out.duplicates += 1
            continue
        link = match(session, parsed, r.recipient, claims, now, fallback_days, signer)
        mail = link.mail
        effect = _effect(session, link, r, now, threshold) if r.outcome in FAILURES else "ignored"
        row_id = session.execute(
            insert(Bounce)
            .values(
                fingerprint=fp,
                received_at=now,
                source=(source or "")[:500] or None,
                kind=parsed.kind[:16],
                recipient=(r.recipient or None) and r.recipient[:320],
                outcome=r.outcome,
                smtp_code=r.smtp_code,
                enhanced_code=r.status,
                reason=(r.reason or None) and r.reason[:64],
                diagnostic=r.diagnostic or None,
                mail_id=mail.id if mail is not None else None,
                matched_by=link.how,
                effect=effect,
                trust=link.trust,
                original_message_id=(parsed.original_message_id or "")[:255] or None,
            )
            .returning(Bounce.id)
        ).scalar_one()
        out.ingested += 1
        if r.outcome == "hard":
            out.hard += 1
        elif r.outcome == "soft":
            out.soft += 1
        else:
            out.ignored += 1
        out.applied += effect == "applied"
        out.untrusted += effect == "untrusted"
        if mail is None:
            out.unmatched += 1
            out.unmatched_ids.append(row_id)
        else:
            out.matched += 1
    return out


def ingest_raw(
    session_factory: SessionFactory,
    raw: bytes,
    source: str | None = None,
    now: datetime | None = None,
    signer: MailSigner | None = None,
) -> IngestSummary:
    """One message in its own transaction; a concurrent run recording it too is a no-op."""
    with session_factory() as session:
        take_write_lock(session)  # SQLite: write-locked before the first read
        try:
            summary = ingest_message(session, raw, source, now, signer)
            session.commit()
        except IntegrityError:  # another run recorded the same fingerprint just now
            session.rollback()
            take_write_lock(session)
            summary = ingest_message(session, raw, source, now, signer)
            session.commit()
        return summary


# -- a whole mailbox ------------------------------------------------------------------


def ingest_source(
    session_factory: SessionFactory,
    source: BounceSource,
    now: datetime | None = None,
    limit: int | None = None,
) -> IngestSummary:
    """Every waiting message of `source`, each committed before it is marked done.

    A message that cannot be recorded (store error) stays in the mailbox and is listed
    in `failed`; the others go on.
    """
    total = IngestSummary()
    signer = MailSigner()  # the signing key is read once per run, when first needed
    for n, message in enumerate(source.messages()):
        if limit is not None and n >= limit:
            break
        total.merge(_one(session_factory, source, message, now, signer))
    return total


def _one(
    session_factory: SessionFactory,
    source: BounceSource,
    message: Incoming,
    now: datetime | None,
    signer: MailSigner,
) -> IngestSummary:
    try:
        summary = ingest_raw(session_factory, message.raw, message.ref, now, signer)
    except Exception as exc:  # keep going; the message stays for the next run
        log.exception("bounce %s not recorded", message.ref)
        return IngestSummary(messages=1, failed=[f"{message.ref}: {exc}"[:500]])
    source.done(message)
    return summary


def ingest_mailbox(
    session_factory: SessionFactory,
    source: BounceSource | None = None,
    now: datetime | None = None,
    limit: int | None = None,
) -> IngestSummary:
    """The DAG's and CLI's entry: the configured mailbox (`automail_bounce_mailbox`)."""
    source = source or open_source()
    try:
        return ingest_source(session_factory, source, now, limit)
    finally:
        source.close()


def unmatched(session: Session, limit: int = 100) -> list[Bounce]:
    """Newest bounces that matched no mail (for the CLI and the DAG log)."""
    return list(
        session.scalars(
            select(Bounce)
            .where(Bounce.mail_id.is_(None))
            .order_by(Bounce.received_at.desc(), Bounce.id.desc())
            .limit(limit)
        )
    )


def bounces_of(session: Session, mail_id: int) -> list[Bounce]:
    """A mail's bounces, oldest first (detail screen)."""
    return list(
        session.scalars(select(Bounce).where(Bounce.mail_id == mail_id).order_by(Bounce.id))
    )


def bounces_for_address(session: Session, address: str, limit: int = 20) -> list[Bounce]:
    """Newest bounces naming this recipient (recipients are stored lowercased)."""
    addr = address.strip().lower()
    return list(
        session.scalars(
            select(Bounce)
            .where(Bounce.recipient == addr)
            .order_by(Bounce.received_at.desc(), Bounce.id.desc())
            .limit(limit)
        )
    )


__all__ = [
    "ACTOR",
    "IngestSummary",
    "Link",
    "bounces_for_address",
    "bounces_of",
    "claims_of",
    "effect_text",
    "fingerprint",
    "ingest_mailbox",
    "ingest_message",
    "ingest_raw",
    "ingest_source",
    "match",
    "unmatched",
]
