"""Forged bounces (issue 12 item 1): anyone can mail the bounce mailbox, mail ids are
sequential and Message-IDs predictable, so only a per-mail signed token may let a bounce
change a mail or an address (automail.bounce_links, automail.bounces.ingest).

- `test_forged_bounces_of_every_shape_change_nothing`: ≥1,000 forged bounces against
  mails really sent through the SMTP sink, of every shape that used to clean an address
  or could be tried next (X-Automail-Id only, Message-IDs of any domain including the
  exact predictable ones, unsigned and wrongly signed VERP return paths, an attacker's
  own valid token naming a victim or replayed for another mail id, a DSN naming only
  the victim, ...). Counter `forged_bounces_applied` (rows applied + victims whose
  address or mail changed) must be 0; every forgery is still recorded.
- `test_signed_corpus_bounces_are_applied`: the control. Real bounces of the shared
  corpus, delivered to the signed return path of a mail really sent to their recipient
  (as the bounce mailbox's MTA would, with Delivered-To), are applied.

Knob: FAULTS_FORGED_VICTIMS (default 40 mails; 28 shapes each).
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter
from pathlib import Path

from bounce_helpers import bare_bounce, dsn, new_mail
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from automail.bounce_links import MailSigner
from automail.bounces import parse_bounce
from automail.bounces.ingest import IngestSummary, ingest_raw
from automail.db import session_factory
from automail.models import Bounce, Customer, Mail, MailEvent, Shop
from automail.sample_data import make_customer, make_shop
from automail.sending import SmtpConfig, run_send_cycle
from automail.smtp_sink import SmtpSink

from .conftest import FaultTotals, env_int

VICTIMS = env_int("FAULTS_FORGED_VICTIMS", 40)
SOFT = "452 4.2.2 <{r}>: Mailbox full"
_seq = itertools.count()


def _fresh(session: Session) -> None:
    session.commit()
    session.expire_all()


def _send_all(engine: Engine, sink: SmtpSink, claim: str) -> dict[int, bytes]:
    """One real send run; {mail id: the bytes the sink received (with Return-Path)}."""
    before = len(sink.messages)
    cfg = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    summary = run_send_cycle(session_factory(engine), cfg, claim)
    assert summary.failed == 0, summary
    out = {}
    for captured in sink.messages[before:]:
        mail_id = int(captured.message["X-Automail-Id"])
        out[mail_id] = captured.data
    return out


def _plain(to: str, body: str, headers: str = "") -> bytes:
    """A hand-written 'bounce': plain text, no DSN structure."""
    return (
        f"From: postmaster@evil.example\r\nTo: {to}\r\nSubject: Undelivered Mail\r\n"
        f"Message-ID: <forged.{next(_seq)}@evil.example>\r\n{headers}\r\n{body}\r\n"
    ).encode()


def _returned(message_id: str, to: str, extra: str = "") -> bytes:
    """The header block of a 'returned original' an attacker writes."""
    return (
        f"From: shop@tea.example.jp\r\nTo: {to}\r\nSubject: order\r\n"
        f"Message-ID: {message_id}\r\n{extra}\r\n"
    ).encode()


def _forgeries(
    victim: Mail, shop: Shop, attacker: Mail, attacker_data: bytes, signer: MailSigner
) -> list[tuple[str, bytes]]:
    """Every shape of forged bounce against `victim`: (shape, raw message)."""
    vid, addr = victim.id, victim.to_address
    box = shop.return_path
    local, _, domain = box.partition("@")
    own_token = signer.token(attacker.shop_id, attacker.id)  # the attacker got mail A
    wrong = secrets.token_hex(10)  # 20 characters, like a token
    other_shop_token = signer.token(victim.shop_id + 1000, vid)
    predictable = f"<automail.{vid}.{shop.code}@{domain}>"
    shapes: list[tuple[str, bytes]] = [
        (
            "x-automail-id only, no recipient",
            _plain(box, "550 5.1.1 user unknown", f"X-Automail-Id: {vid}\r\n"),
        ),
        (
            "x-automail-id in body",
            _plain(box, f"550 5.1.1 user unknown\r\n\r\nX-Automail-Id: {vid}"),
        ),
        (
            "x-automail-id naming the victim",
            _plain(box, f"<{addr}>: 550 5.1.1 user unknown", f"X-Automail-Id: {vid}\r\n"),
        ),
        ("message-id any domain", dsn(_returned(f"<automail.{vid}.x@evil.example>", addr), addr)),
        ("message-id exact predictable", dsn(_returned(predictable, addr), addr)),
        (
            "message-id predictable + x-automail-id",
            dsn(_returned(predictable, addr, f"X-Automail-Id: {vid}\r\n"), addr),
        ),
        (
            "message-id stored value, unsigned",
            dsn(_returned(f"<automail.{vid}.{shop.code}.r1@{domain}>", addr), addr),
        ),
        (
            "message-id wrong token",
            dsn(_returned(f"<automail.{vid}-{wrong}.{shop.code}@{domain}>", addr), addr),
        ),
        (
            "message-id replayed token",
            dsn(_returned(f"<automail.{vid}-{own_token}.{shop.code}@{domain}>", addr), addr),
        ),
        (
            "message-id other shop's token",
            dsn(_returned(f"<automail.{vid}-{other_shop_token}.x@{domain}>", addr), addr),
        ),
        ("dsn naming only the victim", dsn(b"", addr, to=box)),
        ("soft dsn naming only the victim", dsn(b"", addr, "4.2.2", SOFT, to=box)),
        ("bare bounce naming only the victim", bare_bounce(addr, box)),
        ("unsigned verp", bare_bounce(addr, f"{local}+automail-{vid}@{domain}")),
        ("verp wrong hmac", bare_bounce(addr, f"{local}+{vid}-{wrong}@{domain}")),
        ("verp cut token", bare_bounce(addr, f"{local}+{vid}-{own_token[:8]}@{domain}")),
        ("verp replayed token", bare_bounce(addr, f"{local}+{vid}-{own_token}@{domain}")),
        (
            "verp other shop's token",
            bare_bounce(addr, f"{local}+{vid}-{other_shop_token}@{domain}"),
        ),
        (
            "verp replayed in delivered-to",
            b"Delivered-To: "
            + f"{local}+{vid}-{own_token}@{domain}\r\n".encode()
            + dsn(b"", addr, to=box),
        ),
        (
            "own valid verp naming the victim",
            bare_bounce(addr, signer.return_path(box, attacker.shop_id, attacker.id)),
        ),
        ("own valid verp, dsn naming the victim", dsn(attacker_data, addr)),
        (
            "own valid verp, no recipient",
            _plain(
                signer.return_path(box, attacker.shop_id, attacker.id), "550 5.1.1 user unknown"
            ),
        ),
        ("own valid message-id naming the victim", dsn(attacker_data, addr, to=box)),
        (
            "own valid verp + victim x-automail-id",
            dsn(
                _returned(predictable, addr, f"X-Automail-Id: {vid}\r\n"),
                addr,
                to=signer.return_path(box, attacker.shop_id, attacker.id),
            ),
        ),
        (
            "unsigned verp + predictable message-id",
            dsn(_returned(predictable, addr), addr, to=f"{local}+automail-{vid}@{domain}"),
        ),
        ("hard soft mix: soft unsigned", dsn(_returned(predictable, addr), addr, "4.2.2", SOFT)),
        ("wrong token uppercase", bare_bounce(addr, f"{local}+{vid}-{wrong.upper()}@{domain}")),
        (
            "hundreds of wrong verp claims",
            bare_bounce(
                addr,
                ", ".join(f"{local}+{vid}-{secrets.token_hex(10)}@{domain}" for _ in range(300)),
            ),
        ),
    ]
    return shapes


def test_forged_bounces_of_every_shape_change_nothing(
    engine: Engine, session: Session, smtp_sink: SmtpSink, fault_totals: FaultTotals
) -> None:
    shops = [
        make_shop(session, return_path="bounce@tea.example.jp"),
        make_shop(session, code="cafe", name="カフェ", return_path="errors@cafe.example.jp"),
    ]
    attacker_c = make_customer(session, shops[0], "mallory@evil.example", name="Mallory")
    attacker = new_mail(session, shops[0], attacker_c.email, attacker_c.id)
    victims: list[Mail] = []
    for n in range(VICTIMS):
        shop = shops[n % 2]
        c = make_customer(session, shop, f"victim{n}@example.jp")
        victims.append(new_mail(session, shop, c.email, c.id))
    session.commit()
    sent = _send_all(engine, smtp_sink, "forged-setup")
    assert len(sent) == VICTIMS + 1
    _fresh(session)
    by_id = {s.id: s for s in shops}
    signer = MailSigner()
    attacker = session.get(Mail, attacker.id)

    factory = session_factory(engine)
    total = IngestSummary()
    shapes: Counter[str] = Counter()
    n = 0
    for victim in victims:
        victim = session.get(Mail, victim.id)
        session.commit()
        for shape, raw in _forgeries(
            victim, by_id[victim.shop_id], attacker, sent[attacker.id], signer
        ):
            total.merge(ingest_raw(factory, raw, f"forged:{shape}"))
            shapes[shape] += 1
            n += 1

    _fresh(session)
    changed_customers = session.scalar(
        select(func.count())
        .select_from(Customer)
        .where(
            (Customer.address_cleaned.is_(True))
            | (Customer.address_valid.is_(False))
            | (Customer.consecutive_failures != 0)
        )
    )
    changed_mails = session.scalar(
        select(func.count()).select_from(Mail).where(Mail.bounce_outcome.is_not(None))
    )
    bounced_events = session.scalar(
        select(func.count()).select_from(MailEvent).where(MailEvent.event == "bounced")
    )
    effects = Counter(session.scalars(select(Bounce.effect)))
    trusts = Counter(session.scalars(select(Bounce.trust)))
    applied = (
        total.applied + effects["applied"] + changed_customers + changed_mails + bounced_events
    )
    fault_totals.inputs += n
    fault_totals.count("forged_bounces_applied", applied)
    fault_totals.lines.append(
        f"forged bounces: {n} in {len(shapes)} shapes against {VICTIMS} mails -> "
        f"applied {applied}, recorded {sum(effects.values())} ({dict(sorted(effects.items()))})"
    )

    assert n >= 1000 or VICTIMS < 40
    assert applied == 0, (effects, changed_customers, changed_mails)
    # Nothing is dropped: every forgery is a row, linked where it names a mail, and says why.
    assert total.ingested == sum(effects.values()) >= n
    assert set(effects) <= {"untrusted", "other_recipient", "no_recipient", "recorded"}
    assert trusts["unsigned"] and trusts["bad_signature"] and trusts["signed"]
    assert total.untrusted == effects["untrusted"] > 0


def _failed_recipient(raw: bytes) -> tuple[str, str] | None:
    """(recipient, hard|soft) of the first failed recipient an SMTP server would take."""
    for r in parse_bounce(raw).recipients:
        address = r.recipient or ""
        usable = address.isascii() and "@" in address and not any(c in address for c in "<> \t")
        if r.outcome in ("hard", "soft") and usable:
            return address, r.outcome
    return None


def test_signed_corpus_bounces_are_applied(
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    bounce_corpus: Path,
    fault_totals: FaultTotals,
) -> None:
    files = sorted((bounce_corpus / "eml").glob("*.eml"))
    cases: list[tuple[Path, bytes, str]] = []
    hard: set[str] = set()
    for path in files:
        raw = path.read_bytes()
        failed = _failed_recipient(raw)
        if failed is not None:
            cases.append((path, raw, failed[0]))
            hard.update([failed[0]] if failed[1] == "hard" else [])
    assert len(cases) >= 100, "the corpus should hold many real failed deliveries"
    shop = make_shop(session, return_path="bounce@tea.example.jp", address_check=False)
    customers: dict[str, Customer] = {}
    mails: dict[str, Mail] = {}
    for path, _, recipient in cases:
        c = customers.get(recipient) or make_customer(session, shop, recipient)
        customers[recipient] = c
        mails[path.name] = new_mail(session, shop, recipient, c.id)
    session.commit()
    sent = _send_all(engine, smtp_sink, "corpus-setup")
    assert len(sent) == len(cases)
    signer = MailSigner()
    factory = session_factory(engine)

    effects: Counter[str] = Counter()
    for path, raw, _ in cases:
        mail = mails[path.name]
        verp = signer.return_path(shop.return_path, shop.id, mail.id)
        assert sent[mail.id].startswith(f"Return-Path: <{verp}>".encode())
        # What the bounce mailbox's MTA adds on delivery to the mail's return path.
        delivered = f"Delivered-To: {verp}\r\nX-Original-To: {verp}\r\n".encode() + raw
        ingest_raw(factory, delivered, path.name)

    _fresh(session)
    for path, _, recipient in cases:
        rows = session.scalars(select(Bounce).where(Bounce.source == path.name)).all()
        mine = [b for b in rows if b.recipient == recipient.lower()]
        assert mine and all(b.trust == "signed" for b in rows), path.name
        effects.update(b.effect for b in mine)
    cleaned = session.scalar(
        select(func.count()).select_from(Customer).where(Customer.address_cleaned.is_(True))
    )
    fault_totals.count("signed_corpus_bounces_applied", effects["applied"])
    fault_totals.lines.append(
        f"signed corpus bounces: {len(cases)} files -> {dict(sorted(effects.items()))}"
    )
    assert effects["applied"] == len(cases), effects
    assert cleaned >= len(hard) > 0
    assert session.scalar(select(func.count()).select_from(Mail)) == len(cases)
