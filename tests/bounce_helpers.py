"""Helpers of the bounce ingestion tests: sent mails and the DSNs an MTA would return."""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from automail.db import session_factory
from automail.models import Customer, Mail, Shop
from automail.sample_data import make_customer, make_shop
from automail.sending import SmtpConfig, send_now
from automail.smtp_sink import SmtpSink

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
_seq = itertools.count()


def new_mail(session: Session, shop: Shop, to: str, customer_id: int | None, **kw) -> Mail:
    mail = Mail(
        shop_id=shop.id,
        kind=kw.pop("kind", "order_confirmation"),
        source_key=f"bounce-test:{next(_seq)}",
        customer_id=customer_id,
        to_address=to,
        from_address=shop.from_address,
        from_name=shop.from_name,
        reply_to=shop.reply_to,
        bcc=kw.pop("bcc", shop.bcc),
        return_path=shop.return_path,
        subject=kw.pop("subject", "【お茶の山田園】ご注文ありがとうございます"),
        body_text=kw.pop("body_text", "山田 花子 様\nご注文を承りました。"),
        **kw,
    )
    session.add(mail)
    session.flush()
    return mail


def send(engine: Engine, sink: SmtpSink, mail_id: int) -> bytes:
    """Send one mail through the real sender to the sink; the bytes the sink received."""
    before = len(sink.messages)
    cfg = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    summary = send_now(session_factory(engine), [mail_id], "test", smtp=cfg)
    assert not summary.not_claimed, summary
    if len(sink.messages) == before:
        return b""
    return sink.messages[-1].data


def sent_to_sink(
    engine: Engine, session: Session, sink: SmtpSink, address: str
) -> tuple[Mail, Customer, bytes]:
    """A shop whose bounces come back to bounce@tea.example.jp, a customer at `address`
    and one mail to them, really sent to the sink: (mail, customer, bytes received)."""
    shop = make_shop(session, return_path="bounce@tea.example.jp")
    customer = make_customer(session, shop, address)
    mail = new_mail(session, shop, customer.email, customer.id)
    session.commit()
    return mail, customer, send(engine, sink, mail.id)


def dsn(
    original: bytes,
    recipient: str,
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    action: str = "failed",
    to: str | None = None,
) -> bytes:
    """An RFC 3464 report as Postfix writes it, returning the original's headers, sent to
    the original's envelope sender (the sink's Return-Path) unless `to` is given."""
    head = original.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    lines = head.split("\r\n")
    return_path = [
        x.split(":", 1)[1].strip(" <>") for x in lines if x.lower().startswith("return-path:")
    ]
    to = to or (return_path[0] if return_path else "bounce@tea.example.jp")
    headers = "\n".join(x for x in lines if not x.lower().startswith("return-path:"))
    diag = diagnostic.format(r=recipient)
    return f"""\
Return-Path: <>
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: Mon, 2 Mar 2026 10:00:00 +0900
Message-ID: <dsn.{next(_seq)}@mx.example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"
Auto-Submitted: auto-replied

--B0UND
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{recipient}>: host mx.example.net said: {diag}

--B0UND
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
Arrival-Date: Mon, 2 Mar 2026 09:59:58 +0900

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; {diag}

--B0UND
Content-Type: text/rfc822-headers

{headers}

--B0UND--
""".replace("\n", "\r\n").encode()


def bare_bounce(recipient: str, to: str, text: str = "550 5.1.1 User unknown") -> bytes:
    """A headerless non-standard bounce: only the envelope address can tell the mail."""
    return f"""\
From: MAILER-DAEMON@old-mta.example
To: {to}
Subject: failure notice
Date: Mon, 2 Mar 2026 10:00:00 +0900

Hi. This is the qmail-send program at old-mta.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{recipient}>:
{text}
""".replace("\n", "\r\n").encode()
