"""One mail as stored (B3) and what happened to it: headers, bodies, every SMTP try,
every status change and staff action, and its copies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.bounces.ingest import bounces_of, effect_text
from automail.models import Customer, Mail, MailEvent, Order, SendAttempt, Shop
from automail.states import ACTION_FROM, KIND_LABELS, ROW_ACTION_LABEL


class MailNotFound(LookupError):
    def __init__(self, mail_id: int) -> None:
        super().__init__(f"mail {mail_id}: no such mail")
        self.mail_id = mail_id


@dataclass(frozen=True)
class Attempt:
    attempt_no: int
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    smtp_code: int | None
    enhanced_code: str | None
    message: str | None


@dataclass(frozen=True)
class Event:
    at: datetime
    event: str
    from_status: str | None
    to_status: str | None
    actor: str
    detail: str | None


@dataclass(frozen=True)
class BounceRow:
    """A bounce/DSN matched to this mail (E1): what came back, and what it changed."""

    received_at: datetime
    kind: str
    recipient: str | None
    outcome: str
    smtp_code: int | None
    enhanced_code: str | None
    reason: str | None
    diagnostic: str | None
    matched_by: str | None
    effect: str | None
    trust: str | None = None  # signed | unsigned | bad_signature (bounces.ingest)

    @property
    def effect_text(self) -> str:
        return effect_text(self.effect, self.trust)


@dataclass(frozen=True)
class MailDetail:
    id: int
    shop: str
    shop_name: str
    kind: str
    kind_label: str
    status: str
    mode: str
    device: str
    created_at: datetime
    sent_at: datetime | None
    due_at: datetime | None
    rendered_at: datetime | None
    created_by: str | None
    attempt_count: int
    last_error: str | None
    bounce_outcome: str | None
    headers: list[tuple[str, str]]
    to_address: str
    subject: str
    body_text: str | None
    body_html: str | None
    copied_from_id: int | None
    copies: list[int]
    order_id: int | None
    customer_id: int | None
    attempts: list[Attempt]
    events: list[Event]
    bounces: list[BounceRow]
    order_number: str | None = None  # the shop's order number (RICE-001325)
    customer_name: str | None = None

    @property
    def row_action(self) -> str | None:
        """The one-row button (seed 000 item 13): send or resend, by status."""
        return ROW_ACTION_LABEL.get(self.status)

    def allowed(self, action: str) -> bool:
        return self.status in ACTION_FROM.get(action, ())


def _display(name: str | None, address: str) -> str:
    try:
        return str(Address(display_name=name or "", addr_spec=address))
    except (ValueError, IndexError, HeaderParseError):  # unparsable stored address: raw
        return f"{name} <{address}>" if name else address


def headers_of(mail: Mail) -> list[tuple[str, str]]:
    """The headers the mail carries (or will carry), in the order a reader expects."""
    out = [
        # Readable (not RFC 2047-encoded) display form; the sender encodes on the wire.
        ("From", _display(mail.from_name, mail.from_address)),
        ("To", mail.to_address),
    ]
    if mail.reply_to:
        out.append(("Reply-To", mail.reply_to))
    if mail.bcc:
        out.append(("Bcc", mail.bcc))
    out.append(("Subject", mail.subject))
    if mail.message_id:
        out.append(("Message-ID", mail.message_id))
    if mail.return_path:
        out.append(("Return-Path", mail.return_path))
    for name, value in sorted((mail.extra_headers or {}).items()):
        out.append((str(name), str(value)))
    return out


MAX_MAIL_ID = 2**63 - 1  # BIGINT: a larger number names no mail (and no driver takes it)


def get_detail(session: Session, mail_id: int) -> MailDetail:
    if not 1 <= mail_id <= MAX_MAIL_ID:
        raise MailNotFound(mail_id)
    mail = session.get(Mail, mail_id)
    if mail is None:
        raise MailNotFound(mail_id)
    shop = session.get(Shop, mail.shop_id)
    attempts = session.scalars(
        select(SendAttempt).where(SendAttempt.mail_id == mail_id).order_by(SendAttempt.id)
    )
    events = session.scalars(
        select(MailEvent).where(MailEvent.mail_id == mail_id).order_by(MailEvent.id)
    )
    copies = session.scalars(
        select(Mail.id).where(Mail.copied_from_id == mail_id).order_by(Mail.id)
    )
    return MailDetail(
        id=mail.id,
        shop=shop.code if shop else str(mail.shop_id),
        shop_name=shop.name if shop else "",
        kind=mail.kind,
        kind_label=KIND_LABELS.get(mail.kind, mail.kind),
        status=mail.status,
        mode=mail.mode,
        device=mail.device,
        created_at=mail.created_at,
        sent_at=mail.sent_at,
        due_at=mail.due_at,
        rendered_at=mail.rendered_at,
        created_by=mail.created_by,
        attempt_count=mail.attempt_count,
        last_error=mail.last_error,
        bounce_outcome=mail.bounce_outcome,
        headers=headers_of(mail),
        to_address=mail.to_address,
        subject=mail.subject,
        body_text=mail.body_text,
        body_html=mail.body_html,
        copied_from_id=mail.copied_from_id,
        copies=list(copies),
        order_id=mail.order_id,
        customer_id=mail.customer_id,
        attempts=[
            Attempt(
                a.attempt_no,
                a.started_at,
                a.finished_at,
                a.outcome,
                a.smtp_code,
                a.enhanced_code,
                a.message,
            )
            for a in attempts
        ],
        events=[
            Event(e.at, e.event, e.from_status, e.to_status, e.actor, e.detail) for e in events
        ],
        bounces=[
            BounceRow(
                b.received_at,
                b.kind,
                b.recipient,
                b.outcome,
                b.smtp_code,
                b.enhanced_code,
                b.reason,
                b.diagnostic,
                b.matched_by,
                b.effect,
                b.trust,
            )
            for b in bounces_of(session, mail_id)
        ],
        order_number=session.scalar(select(Order.order_number).where(Order.id == mail.order_id))
        if mail.order_id
        else None,
        customer_name=session.scalar(select(Customer.name).where(Customer.id == mail.customer_id))
        if mail.customer_id
        else None,
    )
