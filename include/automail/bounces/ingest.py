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
  `address_health.bounce_failure` — invalidate it. The status stays `sent`: B10
  says sent means accepted, campaign counts already read `bounce_outcome` as an error,
  and a bounced mail still counts against the quota (C9).
- `recorded`: the mail is not `sent` any more (resent, or failed at once, which the
  sender counted already): outcome and event are kept, address health is untouched;
  also a second bounce for the same mail (counted once).
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

from sqlalchemy import bindparam, func, insert, select, update
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


# -- bulk reads for a chunk of messages (`ingest_source`) ------------------------------

CHUNK = 200  # messages per transaction; a failure re-runs only its chunk, one by one
_BATCH = "automail.bounce_batch"  # Session.info key of the chunk's _Batch
_ID_CHUNK = 500  # values per IN (...) list


@dataclass
class _Batch:
    """What a chunk's messages need from the store, read with one query per kind.

    `ingest_message` asks through `_parsed`, `_known` and `_setting`, which answer from
    here inside a chunk and from the store otherwise. The mails a chunk names (by
    X-Automail-Id, a return path or our Message-ID, signed or not) are loaded into the
    session, so matching by id — and checking a claim's signature against its mail's
    shop — finds them in its identity map without a query.
    """

    parsed: dict[int, tuple[bytes, ParsedBounce, list[Claim]]]
    known: set[str]
    settings: dict[str, int]  # bounce_fallback_days, invalid_after_failures
    mails: list[Mail]  # held here: the identity map keeps only weak references
    # (customer, address) -> the newest sent mails' (id, bounce_outcome), newest first
    newest: dict[tuple[int, str], list[tuple[int, str | None]]]
    # Writes deferred to `flush` (one statement per kind, not some six per bounce):
    outcomes: dict[int, tuple[str, datetime]] = field(default_factory=dict)  # mail id ->
    events: list[dict] = field(default_factory=list)
    health: list[address_health.Write] = field(default_factory=list)  # in order
    records: list[dict] = field(default_factory=list)
    unmatched: list[tuple[IngestSummary, str]] = field(default_factory=list)  # (out, fp)

    @classmethod
    def read(cls, session: Session, items: list[tuple[bytes, ParsedBounce, list[Claim]]]) -> _Batch:
        fps = [[fingerprint(raw, r.recipient) for r in _recipients(p)] for raw, p, _ in items]
        known: set[str] = set()
        mails: list[Mail] = []
        for part in _slices([fp for message in fps for fp in message]):
            known.update(
                session.scalars(select(Bounce.fingerprint).where(Bounce.fingerprint.in_(part)))
            )
        ids = set()  # of the messages not recorded before (a re-read needs no mail)
        for (_, parsed, claims), message in zip(items, fps, strict=True):
            if not known.issuperset(message):
                ids.update(_named_ids(parsed, claims))
        for part in _slices(sorted(ids)):
            mails.extend(session.scalars(select(Mail).where(Mail.id.in_(part))))
        return cls(
            parsed={id(raw): (raw, parsed, claims) for raw, parsed, claims in items},
            known=known,
            settings={k: settings.get(session, k) for k in _SETTINGS},
            mails=mails,
            newest=_newest_sent(session, mails),
        )

    def flush(self, session: Session) -> None:
        """Write what the chunk's bounces deferred, a statement per kind (the order
        between kinds does not matter: no statement reads another kind's rows), then
        give each unmatched row's summary its Bounce id."""
        conn = session.connection()
        by_outcome: dict[tuple[str, datetime], list[int]] = {}
        for mail_id, key in self.outcomes.items():
            by_outcome.setdefault(key, []).append(mail_id)
        for (outcome, now), mail_ids in by_outcome.items():
            for part in _slices(sorted(mail_ids)):
                conn.execute(
                    update(Mail)
                    .where(Mail.id.in_(part))
                    .values(bounce_outcome=outcome, updated_at=now)
                )
        if self.events:
            conn.execute(_ADD_EVENT, self.events)
        address_health.execute_in_order(session, self.health)
        ids = {}
        if self.records:
            ids = dict(conn.execute(_RECORD, self.records).all())  # fingerprint -> id
        for out, fp in self.unmatched:
            out.unmatched_ids.append(ids[fp])
        self.outcomes, self.events, self.health = {}, [], []
        self.records, self.unmatched = [], []


def _newest_sent(session: Session, mails: list[Mail]) -> dict:
    """The newest `STREAK_WINDOW` sent mails of each (customer, address) the chunk's sent
    mails belong to, with their bounce outcome: the failure streak's input, read once."""
    pairs = {(m.customer_id, m.to_address) for m in mails if m.customer_id and m.status == SENT}
    out: dict[tuple[int, str], list[tuple[int, str | None]]] = {p: [] for p in pairs}
    for part in _slices(sorted({c for c, _ in pairs})):
        rows = session.execute(_NEWEST_OF_CUSTOMERS, {"b_customers": part})
        for customer_id, to_address, mail_id, outcome in rows:
            if (customer_id, to_address) in out:
                out[(customer_id, to_address)].append((mail_id, outcome))
    return out


_SETTINGS = ("bounce_fallback_days", "invalid_after_failures")
_MAX_ID = 2**63 - 1  # a bigint; larger is no id of ours


def _slices(values: list) -> list[list]:
    return [values[i : i + _ID_CHUNK] for i in range(0, len(values), _ID_CHUNK)]


def _named_ids(parsed: ParsedBounce, claims: list[Claim]) -> set[int]:
    """Mail ids a bounce names: its X-Automail-Id and its claims (return paths, our
    Message-ID form)."""
    found = {c.mail_id for c in claims}
    m = _DIGITS_RE.match(parsed.original_headers.get("x-automail-id", "").strip())
    if m and len(m.group(1)) <= 19:
        found.add(int(m.group(1)))
    return {i for i in found if 0 < i <= _MAX_ID}


_DIGITS_RE = re.compile(r"^(\d+)$")


def _batch(session: Session) -> _Batch | None:
    return session.info.get(_BATCH)


def _known(batch: _Batch, fps: list[str]) -> set[str]:
    """Fingerprints already recorded. The ones asked about are recorded by the caller in
    this same transaction, so a repeat later in the chunk is known too."""
    known = {fp for fp in fps if fp in batch.known}
    batch.known.update(fps)
    return known


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


def _effect(
    session: Session, batch: _Batch, link: Link, r: BounceRecipient, now: datetime, threshold: int
) -> str:
    """What a hard/soft bounce does: nothing unless signed and naming the mail's recipient."""
    if link.mail is None:
        return "recorded"
    if link.trust != SIGNED:
        return "untrusted"
    if not r.recipient:
        return "no_recipient"
    return _apply(session, batch, link.mail, r, now, threshold)


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


# Statements run for every chunk are built once: building and caching a statement costs
# some 20 times more than executing a prebuilt one with new parameters.
_ADD_EVENT = insert(MailEvent)
_RECORD = insert(Bounce).returning(Bounce.fingerprint, Bounce.id)
_STREAK_ORDER = (Mail.sent_at.desc(), Mail.id.desc())
_SENT_OF = (Mail.status == SENT, Mail.sent_at.is_not(None))
_NEWEST_OUTCOMES = (
    select(Mail.id, Mail.bounce_outcome)
    .where(Mail.customer_id == bindparam("b_customer"), Mail.to_address == bindparam("b_to"))
    .where(*_SENT_OF)
    .order_by(*_STREAK_ORDER)
    .limit(STREAK_WINDOW)
)
_RANKED = (
    select(
        Mail.customer_id,
        Mail.to_address,
        Mail.id,
        Mail.bounce_outcome,
        func.row_number()
        .over(partition_by=(Mail.customer_id, Mail.to_address), order_by=_STREAK_ORDER)
        .label("n"),
    )
    .where(Mail.customer_id.in_(bindparam("b_customers", expanding=True)), *_SENT_OF)
    .subquery()
)
_NEWEST_OF_CUSTOMERS = (
    select(_RANKED.c.customer_id, _RANKED.c.to_address, _RANKED.c.id, _RANKED.c.bounce_outcome)
    .where(_RANKED.c.n <= STREAK_WINDOW)
    .order_by(_RANKED.c.customer_id, _RANKED.c.to_address, _RANKED.c.n)
)


def _apply(
    session: Session, batch: _Batch, mail: Mail, r: BounceRecipient, now: datetime, threshold: int
) -> str:
    """Apply a hard/soft bounce to its matched mail; returns the effect (module docstring).
    The writes wait in `batch` until the chunk's end; the mail object holds its new outcome
    at once, so a later bounce in the chunk reads it."""
    if r.recipient != mail.to_address.strip().lower():
        return "other_recipient"
    previous = mail.bounce_outcome
    outcome = "hard" if "hard" in (previous, r.outcome) else "soft"
    batch.outcomes[mail.id] = (outcome, now)
    batch.events.append(
        {
            "mail_id": mail.id,
            "at": now,
            "event": "bounced",
            "from_status": mail.status,
            "to_status": mail.status,
            "actor": ACTOR,
            "detail": _describe(r)[:2000],
        }
    )
    set_committed_value(mail, "bounce_outcome", outcome)  # written by batch.flush
    if mail.status != SENT:
        return "recorded"
    reason = f"bounce {r.reason}: {r.diagnostic or r.status or r.smtp_code}"[:1000]
    if previous is None:
        streak = _failures_in_a_row(session, batch, mail)
        write = address_health.bounce_failure(
            mail.customer_id, mail.to_address, r.outcome, streak, reason, threshold
        )
    elif previous == "soft" and r.outcome == "hard":
        write = address_health.hard_after_soft(mail.customer_id, mail.to_address, reason)
    else:
        return "recorded"
    if write is not None:
        batch.health.append(write)
    return "applied"


def _failures_in_a_row(session: Session, batch: _Batch, mail: Mail) -> int:
    """Bounced mails in a row among the newest sent mails of this customer and address,
    counting the outcomes this chunk has set but not written yet.

    Mails that failed at once (status error) are left out: the sender counted those it
    blames on the address, and leaving them out never blames an address for our own
    server's trouble.
    """
    if mail.customer_id is None:
        return 0
    newest = batch.newest.get((mail.customer_id, mail.to_address))
    if newest is None:  # a mail the chunk did not prefetch
        newest = batch.newest[(mail.customer_id, mail.to_address)] = list(
            session.execute(
                _NEWEST_OUTCOMES, {"b_customer": mail.customer_id, "b_to": mail.to_address}
            ).tuples()
        )
    streak = 0
    for mail_id, outcome in newest:
        pending = batch.outcomes.get(mail_id)
        if (pending[0] if pending else outcome) is None:
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
    """Record and apply one received message (no commit). Idempotent per message.

    Inside a chunk (`_chunk`) the writes wait for the chunk's `_Batch.flush`; on its own
    the message is a chunk of one, written before this returns.
    """
    now = now or datetime.now(UTC)
    signer = signer or MailSigner()
    batch = _batch(session)
    if batch is not None:
        return _ingest(session, batch, raw, source, now, signer)
    parsed = parse_bounce(raw)
    batch = session.info[_BATCH] = _Batch.read(session, [(raw, parsed, claims_of(parsed, raw))])
    try:
        out = _ingest(session, batch, raw, source, now, signer)
        batch.flush(session)
    finally:
        del session.info[_BATCH]
    return out


def _ingest(
    session: Session,
    batch: _Batch,
    raw: bytes,
    source: str | None,
    now: datetime,
    signer: MailSigner,
) -> IngestSummary:
    out = IngestSummary(messages=1)
    hit = batch.parsed.get(id(raw))
    if hit is not None and hit[0] is raw:
        parsed, claims = hit[1], hit[2]
    else:  # not read with the chunk (a caller's own session and batch)
        parsed = parse_bounce(raw)
        claims = claims_of(parsed, raw)
    rows = [(r, fingerprint(raw, r.recipient)) for r in _recipients(parsed)]
    known = _known(batch, [fp for _, fp in rows])
    fallback_days = batch.settings["bounce_fallback_days"]
    threshold = batch.settings["invalid_after_failures"]
    for r, fp in rows:
        if fp in known:
            out.duplicates += 1
            continue
        link = match(session, parsed, r.recipient, claims, now, fallback_days, signer)
        mail = link.mail
        if r.outcome in FAILURES:
            effect = _effect(session, batch, link, r, now, threshold)
        else:
            effect = "ignored"
        batch.records.append(
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
                matched_by=link.how,
                effect=effect,
                trust=link.trust,
                original_message_id=(parsed.original_message_id or "")[:255] or None,
            )
        )
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
            batch.unmatched.append((out, fp))  # its Bounce id comes with the flush
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
    chunk: int = CHUNK,
) -> IngestSummary:
    """Every waiting message of `source`, `chunk` messages per transaction, each message
    marked done only after the commit that recorded it (see `_chunk`).

    A message that cannot be recorded (store error) stays in the mailbox and is listed
    in `failed`; the others go on.
    """
    total = IngestSummary()
    signer = MailSigner()  # the signing key is read once per run, when first needed
    messages = source.messages()
    if limit is not None:
        messages = itertools.islice(messages, limit)
    while batch := list(itertools.islice(messages, max(1, chunk))):
        total.merge(_chunk(session_factory, source, batch, now, signer))
    return total


def _chunk(
    session_factory: SessionFactory,
    source: BounceSource,
    messages: list[Incoming],
    now: datetime | None,
    signer: MailSigner,
) -> IngestSummary:
    """One transaction for a chunk of messages: parse them all first (no lock held), read
    what they need in bulk (known fingerprints, the mails they name, those mails'
    addresses' newest sent mails, settings), take each in with `ingest_message`, write
    what they deferred (`_Batch.flush`), commit, then mark them done. If anything goes wrong the
    chunk is rolled back and its messages go one by one (`_one`), so one bad message
    costs only itself and a concurrent run recording the same messages is a no-op.
    """
    total = IngestSummary()
    now = now or datetime.now(UTC)  # one transaction: one time for its bounces
    try:
        read = [(m.raw, parse_bounce(m.raw)) for m in messages]
        items = [(raw, p, claims_of(p, raw)) for raw, p in read]
        with session_factory() as session:
            take_write_lock(session)  # SQLite: write-locked before the first read
            batch = session.info[_BATCH] = _Batch.read(session, items)
            outs = [ingest_message(session, m.raw, m.ref, now, signer) for m in messages]
            batch.flush(session)
            session.commit()
        for out in outs:
            total.merge(out)
    except Exception as exc:  # noqa: BLE001 - retried message by message, which reports it
        log.info("bounce chunk of %d rolled back (%s); one by one", len(messages), exc)
        total = IngestSummary()
        for message in messages:
            total.merge(_one(session_factory, source, message, now, signer))
        return total
    for message in messages:
        source.done(message)
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
