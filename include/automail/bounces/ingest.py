"""Taking in received bounces (SPEC E1–E3): parse, match to the mail, record, apply.

One `Bounce` row per recipient of each received message, fingerprinted by
sha256(raw message + recipient), so ingesting the same message again changes nothing.
Nothing is dropped: a message that names no recipient is one row without recipient, a
bounce that matches no mail is kept with `mail_id` NULL and counted as unmatched.

Matching, first hit wins (`Bounce.matched_by`):
1. `x-automail-id`: the X-Automail-Id header of the returned original;
2. `message-id`: the returned Message-ID (or an auto-reply's In-Reply-To) equals
   `Mail.message_id`, or is one of ours (`<automail.{mail_id}…@…>`) from before a resend;
3. `verp`: the bounce was addressed to a VERP return path `local+automail-{id}@domain`
   (see `verp_return_path`; the sender does not use one today, the shop's fixed
   Return-Path is the envelope sender);
4. `recipient` (last resort, for bounces that return no headers): the newest mail *sent*
   to that address within `bounce_fallback_days`; it can pick the wrong one of several
   recent mails to the same address, so it is used only when nothing else matched.

Effect (`Bounce.effect`) of a hard or soft bounce on its mail's To address:
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
- `other_recipient`: the bounce is about another recipient of the mail (a BCC): kept,
  linked, changes nothing.
- `ignored`: auto-replies, feedback reports, delivery notices, unknown messages
  (outcome none): kept for the record, never change a mail or an address.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from automail import address_health, settings
from automail.bounces.mailbox import BounceSource, Incoming, open_source
from automail.bounces.model import BounceRecipient, ParsedBounce
from automail.bounces.parser import parse_bounce
from automail.db import take_write_lock
from automail.models import Bounce, Mail, MailEvent
from automail.states import SENT

ACTOR = "automail_bounces"
FAILURES = ("hard", "soft")
STREAK_WINDOW = 50  # newest sent mails looked at when counting failures in a row

_OURS_RE = re.compile(r"^<?automail\.(\d+)[.@]", re.I)
_VERP_RE = re.compile(r"\+automail-(\d+)@", re.I)
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


def verp_return_path(return_path: str, mail_id: int) -> str:
    """`bounces@shop.jp` → `bounces+automail-123@shop.jp`, which `match` decodes."""
    local, sep, domain = return_path.rpartition("@")
    if not sep or not local:
        raise ValueError(f"return_path {return_path!r}: not an address")
    return f"{local}+automail-{mail_id}@{domain}"


# -- bulk reads for a chunk of messages (`ingest_source`) ------------------------------

CHUNK = 200  # messages per transaction; a failure re-runs only its chunk, one by one
_BATCH = "automail.bounce_batch"  # Session.info key of the chunk's _Batch
_ID_CHUNK = 500  # values per IN (...) list


@dataclass
class _Batch:
    """What a chunk's messages need from the store, read with one query per kind.

    `ingest_message` asks through `_parsed`, `_known` and `_setting`, which answer from
    here inside a chunk and from the store otherwise. The mails a chunk names (by
    X-Automail-Id or our Message-ID) are loaded into the session, so matching by id
    finds them in its identity map without a query.
    """

    parsed: dict[int, tuple[bytes, ParsedBounce]]
    known: set[str]
    settings: dict[str, object]
    mails: list[Mail]  # held here: the identity map keeps only weak references

    @classmethod
    def read(cls, session: Session, items: list[tuple[bytes, ParsedBounce]]) -> _Batch:
        fps, ids = [], set()
        for raw, parsed in items:
            fps.extend(fingerprint(raw, r.recipient) for r in _recipients(parsed))
            ids.update(_named_ids(parsed))
        known: set[str] = set()
        mails: list[Mail] = []
        for part in _slices(fps):
            known.update(
                session.scalars(select(Bounce.fingerprint).where(Bounce.fingerprint.in_(part)))
            )
        for part in _slices(sorted(ids)):
            mails.extend(session.scalars(select(Mail).where(Mail.id.in_(part))))
        return cls(
            parsed={id(raw): (raw, parsed) for raw, parsed in items},
            known=known,
            settings={k: settings.get(session, k) for k in _SETTINGS},
            mails=mails,
        )


_SETTINGS = ("bounce_fallback_days", "invalid_after_failures")


def _slices(values: list) -> list[list]:
    return [values[i : i + _ID_CHUNK] for i in range(0, len(values), _ID_CHUNK)]


def _named_ids(parsed: ParsedBounce) -> set[int]:
    """Mail ids a bounce names: its X-Automail-Id and our own Message-ID form."""
    found = set()
    for value, pattern in (
        (parsed.original_headers.get("x-automail-id", ""), _DIGITS_RE),
        ((parsed.original_message_id or "").strip().strip("<>"), _OURS_RE),
    ):
        m = pattern.match(value.strip())
        if m and len(m.group(1)) <= 18:  # a bigint; longer is no id of ours
            found.add(int(m.group(1)))
    return found


_DIGITS_RE = re.compile(r"^(\d+)$")


def _batch(session: Session) -> _Batch | None:
    return session.info.get(_BATCH)


def _parsed(session: Session, raw: bytes) -> ParsedBounce:
    """The chunk's parse of `raw` (parsed before the transaction began), else parse now."""
    batch = _batch(session)
    hit = batch.parsed.get(id(raw)) if batch is not None else None
    return hit[1] if hit is not None and hit[0] is raw else parse_bounce(raw)


def _known(session: Session, fps: list[str]) -> set[str]:
    """Fingerprints already recorded. Inside a chunk the ones asked about are recorded by
    the caller in this same transaction, so a repeat later in the chunk is known too."""
    batch = _batch(session)
    if batch is None:
        return set(session.scalars(select(Bounce.fingerprint).where(Bounce.fingerprint.in_(fps))))
    known = {fp for fp in fps if fp in batch.known}
    batch.known.update(fps)
    return known


def _setting(session: Session, key: str):  # noqa: ANN202 - the setting's own type
    batch = _batch(session)
    return batch.settings[key] if batch is not None else settings.get(session, key)


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
    if mail is None and (m := _OURS_RE.match(bare)):
        mail = _mail(session, m.group(1))  # an earlier Message-ID of a mail resent since
    return mail


def _verp_ids(raw: bytes) -> list[str]:
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:200_000])
    found = []
    for name in _VERP_HEADERS:
        for value in headers.get_all(name) or []:
            found.extend(_VERP_RE.findall(str(value)))
    return found


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


def match(
    session: Session,
    parsed: ParsedBounce,
    recipient: str | None,
    raw: bytes,
    now: datetime,
    fallback_days: int,
) -> tuple[Mail | None, str | None]:
    """(mail, how) for one recipient of a bounce; (None, None) when nothing matched."""
    mail = _mail(session, parsed.original_headers.get("x-automail-id"))
    if mail is not None:
        return mail, "x-automail-id"
    mail = _by_message_id(session, parsed.original_message_id)
    if mail is not None:
        return mail, "message-id"
    for mail_id in _verp_ids(raw):
        mail = _mail(session, mail_id)
        if mail is not None:
            return mail, "verp"
    if recipient:
        # The returned To keeps the spelling we stored (the parser lowercases recipients).
        spelled = [a for a in _original_to(parsed) if a.lower() == recipient]
        mail = _by_recipient(session, [recipient, *spelled], now, fallback_days)
        if mail is not None:
            return mail, "recipient"
    return None, None


def _original_to(parsed: ParsedBounce) -> list[str]:
    text = parsed.original_headers.get("to", "")
    return re.findall(r"[^\s<>,;:\"']+@[^\s<>,;:\"']+", text) if text else []


# -- effect ---------------------------------------------------------------------------


def _describe(r: BounceRecipient) -> str:
    code = " ".join(str(c) for c in (r.smtp_code, r.status) if c)
    head = f"{r.outcome} bounce {code} {r.reason}".replace("  ", " ")
    return f"{head}: {r.diagnostic}" if r.diagnostic else head


# Statements run once or more per bounce are built once: building and caching a statement
# costs some 20 times more than executing a prebuilt one with new parameters.
_SET_OUTCOME = (
    update(Mail)
    .where(Mail.id == bindparam("b_mail"))
    .values(bounce_outcome=bindparam("b_outcome"), updated_at=bindparam("b_now"))
)
_ADD_EVENT = insert(MailEvent)
_RECORD = insert(Bounce).returning(Bounce.id)
_NEWEST_OUTCOMES = (
    select(Mail.bounce_outcome)
    .where(
        Mail.customer_id == bindparam("b_customer"),
        Mail.to_address == bindparam("b_to"),
        Mail.status == SENT,
        Mail.sent_at.is_not(None),
    )
    .order_by(Mail.sent_at.desc(), Mail.id.desc())
    .limit(STREAK_WINDOW)
)


def _apply(session: Session, mail: Mail, r: BounceRecipient, now: datetime, threshold: int) -> str:
    """Apply a hard/soft bounce to its matched mail; returns the effect (module docstring)."""
    if r.recipient and r.recipient != mail.to_address.strip().lower():
        return "other_recipient"
    previous = mail.bounce_outcome
    outcome = "hard" if "hard" in (previous, r.outcome) else "soft"
    detail = _describe(r)[:2000]
    conn = session.connection()  # prebuilt Core statements: see _SET_OUTCOME
    conn.execute(_SET_OUTCOME, {"b_mail": mail.id, "b_outcome": outcome, "b_now": now})
    conn.execute(
        _ADD_EVENT,
        {
            "mail_id": mail.id,
            "at": now,
            "event": "bounced",
            "from_status": mail.status,
            "to_status": mail.status,
            "actor": ACTOR,
            "detail": detail,
        },
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
    rows = (
        session.connection()
        .execute(_NEWEST_OUTCOMES, {"b_customer": mail.customer_id, "b_to": mail.to_address})
        .scalars()
    )
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
    session: Session, raw: bytes, source: str | None = None, now: datetime | None = None
) -> IngestSummary:
    """Record and apply one received message (no commit). Idempotent per message."""
    now = now or datetime.now(UTC)
    out = IngestSummary(messages=1)
    parsed = _parsed(session, raw)
    rows = [(r, fingerprint(raw, r.recipient)) for r in _recipients(parsed)]
    known = _known(session, [fp for _, fp in rows])
    fallback_days = _setting(session, "bounce_fallback_days")
    threshold = _setting(session, "invalid_after_failures")
    for r, fp in rows:
        if fp in known:
            out.duplicates += 1
            continue
        mail, how = match(session, parsed, r.recipient, raw, now, fallback_days)
        if r.outcome in FAILURES:
            effect = "recorded" if mail is None else _apply(session, mail, r, now, threshold)
        else:
            effect = "ignored"
        row_id = (
            session.connection()
            .execute(  # prebuilt, see _RECORD
                _RECORD,
                dict(
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
                    matched_by=how,
                    effect=effect,
                    original_message_id=(parsed.original_message_id or "")[:255] or None,
                ),
            )
            .scalar_one()
        )
        out.ingested += 1
        if r.outcome == "hard":
            out.hard += 1
        elif r.outcome == "soft":
            out.soft += 1
        else:
            out.ignored += 1
        out.applied += effect == "applied"
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
) -> IngestSummary:
    """One message in its own transaction; a concurrent run recording it too is a no-op."""
    with session_factory() as session:
        take_write_lock(session)  # SQLite: write-locked before the first read
        try:
            summary = ingest_message(session, raw, source, now)
            session.commit()
        except IntegrityError:  # another run recorded the same fingerprint just now
            session.rollback()
            take_write_lock(session)
            summary = ingest_message(session, raw, source, now)
            session.commit()
        return summary


# -- a whole mailbox ------------------------------------------------------------------


def ingest_source(
    session_factory: SessionFactory,
    source: BounceSource,
    now: datetime | None = None,
    limit: int | None = None,
    chunk: int = CHUNK,
) -> IngestSummary:
    """Every waiting message of `source`, `chunk` messages per transaction, each message
    marked done only after the commit that recorded it (see `_chunk`).

    A message that cannot be recorded (store error) stays in the mailbox and is listed
    in `failed`; the others go on.
    """
    total = IngestSummary()
    messages = source.messages()
    if limit is not None:
        messages = itertools.islice(messages, limit)
    while batch := list(itertools.islice(messages, max(1, chunk))):
        total.merge(_chunk(session_factory, source, batch, now))
    return total


def _chunk(
    session_factory: SessionFactory,
    source: BounceSource,
    messages: list[Incoming],
    now: datetime | None,
) -> IngestSummary:
    """One transaction for a chunk of messages: parse them all first (no lock held), read
    what they need in bulk (known fingerprints, the mails they name, settings), record
    each with `ingest_message`, commit, then mark them done. If anything goes wrong the
    chunk is rolled back and its messages go one by one (`_one`), so one bad message
    costs only itself and a concurrent run recording the same messages is a no-op.
    """
    parsed = [(m, parse_bounce(m.raw)) for m in messages]
    total = IngestSummary()
    try:
        with session_factory() as session:
            take_write_lock(session)  # SQLite: write-locked before the first read
            session.info[_BATCH] = _Batch.read(session, [(m.raw, p) for m, p in parsed])
            for message, _ in parsed:
                total.merge(ingest_message(session, message.raw, message.ref, now))
            session.commit()
    except Exception as exc:  # noqa: BLE001 - retried message by message, which reports it
        log.info("bounce chunk of %d rolled back (%s); one by one", len(messages), exc)
        total = IngestSummary()
        for message in messages:
            total.merge(_one(session_factory, source, message, now))
        return total
    for message in messages:
        source.done(message)
    return total


def _one(
    session_factory: SessionFactory, source: BounceSource, message: Incoming, now: datetime | None
) -> IngestSummary:
    try:
        summary = ingest_raw(session_factory, message.raw, message.ref, now)
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
    "bounces_for_address",
    "bounces_of",
    "fingerprint",
    "ingest_mailbox",
    "ingest_message",
    "ingest_raw",
    "ingest_source",
    "match",
    "unmatched",
    "verp_return_path",
]
