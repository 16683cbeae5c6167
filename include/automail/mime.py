"""Building the MIME message of a stored mail, with safe headers (SPEC F4, A7, B10).

- CR, LF or NUL in any header field (subject, From name, To, Reply-To, BCC, extra
  headers) raises MailBuildError naming the field and value: no header injection.
- From is exactly one address, Reply-To at most/exactly one, BCC a comma list; BCC is
  never written as a header (it only goes into the SMTP envelope).
- Non-ASCII display names and subjects are RFC 2047 encoded by `email.policy.SMTP`.
- Bodies are UTF-8: text/plain, text/html, or multipart/alternative when both.
  ISO-2022-JP is deliberately not offered: every current Japanese mobile carrier
  (docomo, au, SoftBank, and the MVNOs on them) accepts UTF-8, and ISO-2022-JP cannot
  carry many characters customers use in names (e.g. 髙, 﨑, emoji).
- A stable Message-ID derived from the mail id plus `X-Automail-Id` let bounces and
  the sink match a message to its mail, and let a retry be recognised as the same mail.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import TYPE_CHECKING

from automail.addresses import domain_of, split_address_list

if TYPE_CHECKING:
    from automail.models import Mail, Shop

# SMTP policy: CRLF line ends, RFC 2047 for non-ASCII headers, lines folded at 78.
SMTP_POLICY = policy.SMTP
FORBIDDEN = ("\r", "\n", "\0")
# Headers that build_message owns; extra_headers may not override them.
RESERVED = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "x-automail-id",
    "return-path",
}


class MailBuildError(ValueError):
    """A mail that cannot be turned into a safe message; names the field and value."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field} {value!r}: {reason}")
        self.field, self.value, self.reason = field, value, reason


def _clean(field: str, value: str | None) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MailBuildError(field, value, "must be text")
    if any(c in value for c in FORBIDDEN):
        raise MailBuildError(field, value, "contains CR, LF or NUL (header injection refused)")
    return value


def _one_address(field: str, value: str | None, required: bool) -> str | None:
    value = _clean(field, value).strip()
    if not value:
        if required:
            raise MailBuildError(field, value, "an address is required")
        return None
    if len(split_address_list(value)) != 1 or ";" in value or value.count("@") != 1:
        raise MailBuildError(field, value, "exactly one address is allowed")
    return value


def message_id_for(
    mail_id: int, from_address: str, shop_code: str | None = None, resend: int = 0
) -> str:
    """`<automail.{mail_id}[.{shop}][.r{n}]@{from domain}>`: stable across retries."""
    parts = ["automail", str(mail_id)]
    if shop_code:
        parts.append("".join(c for c in shop_code if c.isalnum() or c in "-_"))
    if resend:
        parts.append(f"r{resend}")
    return f"<{'.'.join(parts)}@{domain_of(from_address) or 'localhost'}>"


def envelope_recipients(mail: Mail) -> list[str]:
    """To plus every BCC address: the SMTP RCPT list."""
    return [mail.to_address.strip(), *split_address_list(mail.bcc)]


def _address_header(display_name: str, address: str) -> Address | str:
    """A structured address; legacy non-dot-atom addresses (address check switched off for
    the shop, e.g. old carrier addresses like taro..yamada@) go in verbatim, which is safe
    because CR/LF/NUL were refused already."""
    try:
        return Address(display_name=display_name, addr_spec=address)
    except (ValueError, IndexError):
        return formataddr((display_name, address), charset="utf-8") if display_name else address


def build_message(
    mail: Mail, shop: Shop | None = None, now: datetime | None = None
) -> EmailMessage:
    """The MIME message for `mail`; raises MailBuildError on any unsafe field."""
    from_address = _one_address("from_address", mail.from_address, required=True)
    assert from_address is not None
    to_address = _one_address("to_address", mail.to_address, required=True)
    reply_to = _one_address("reply_to", mail.reply_to, required=False)
    for item in split_address_list(_clean("bcc", mail.bcc)):
        if item.count("@") != 1:
            raise MailBuildError("bcc", mail.bcc, f"{item!r} is not one address")
    subject = _clean("subject", mail.subject)
    from_name = _clean("from_name", mail.from_name)

    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = _address_header(from_name, from_address)
    msg["To"] = _address_header("", to_address)
    if reply_to:
        msg["Reply-To"] = _address_header("", reply_to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = mail.message_id or message_id_for(
        mail.id, from_address, shop.code if shop is not None else None
    )
    msg["X-Automail-Id"] = str(mail.id)
    for name, value in (mail.extra_headers or {}).items():
        name = _clean("extra_headers", name)
        if not name or any(c in name for c in " :") or not name.isascii():
            raise MailBuildError("extra_headers", name, "not a valid header name")
        if name.lower() in RESERVED:
            raise MailBuildError("extra_headers", name, "this header is set by automail")
        msg[name] = _clean(f"extra_headers[{name}]", str(value))

    text, html = mail.body_text, mail.body_html
    if not text and not html:
        raise MailBuildError("body", None, "the mail has neither a text nor an HTML body")
    if text:
        msg.set_content(text, charset="utf-8")
        if html:
            msg.add_alternative(html, subtype="html", charset="utf-8")
    else:
        msg.set_content(html, subtype="html", charset="utf-8")
    return msg


def as_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=SMTP_POLICY)
