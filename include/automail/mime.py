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
- A stable Message-ID derived from the mail id plus `X-Automail-Id` let the sink match
  a message to its mail, and let a retry be recognised as the same mail; only the
  Message-ID's signed token (automail.bounce_links) lets a bounce change anything.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy, quoprimime
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
    return _unicode(field, value)


def _unicode(field: str, value: str) -> str:
    """Refuse lone surrogates (what surrogateescape makes of invalid UTF-8): they cannot
    be encoded, and the email package would otherwise raise deep inside or send them as
    unknown-8bit."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MailBuildError(
            field,
            value[max(0, exc.start - 20) : exc.end + 20],
            f"is not valid Unicode text (undecodable character at position {exc.start})",
        ) from None
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
    mail_id: int,
    from_address: str,
    shop_code: str | None = None,
    resend: int = 0,
    token: str | None = None,
) -> str:
    """`<automail.{mail_id}[-{token}][.{shop}][.r{n}]@{from domain}>`: stable across
    retries. The sender passes the mail's signed token (automail.bounce_links), which is
    what lets a bounce quoting this Message-ID change anything."""
    parts = ["automail", f"{mail_id}-{token}" if token else str(mail_id)]
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


@dataclass(frozen=True)
class _Fields:
    from_address: str
    to_address: str
    reply_to: str | None
    subject: str
    from_name: str
    extra: list[tuple[str, str]]


def _checked(mail: Mail) -> _Fields:
    """Every safety check of a mail's fields (F4); raises MailBuildError naming the field."""
    from_address = _one_address("from_address", mail.from_address, required=True)
    assert from_address is not None
    to_address = _one_address("to_address", mail.to_address, required=True)
    assert to_address is not None
    reply_to = _one_address("reply_to", mail.reply_to, required=False)
    for item in split_address_list(_clean("bcc", mail.bcc)):
        if item.count("@") != 1:
            raise MailBuildError("bcc", mail.bcc, f"{item!r} is not one address")
    subject = _clean("subject", mail.subject)
    from_name = _clean("from_name", mail.from_name)
    extra = []
    for name, value in (mail.extra_headers or {}).items():
        name = _clean("extra_headers", name)
        if not name or any(c in name for c in " :") or not name.isascii():
            raise MailBuildError("extra_headers", name, "not a valid header name")
        if name.lower() in RESERVED:
            raise MailBuildError("extra_headers", name, "this header is set by automail")
        extra.append((name, _clean(f"extra_headers[{name}]", str(value))))
    if not mail.body_text and not mail.body_html:
        raise MailBuildError("body", None, "the mail has neither a text nor an HTML body")
    for field in ("body_text", "body_html"):
        if body := getattr(mail, field):
            _unicode(field, body)
    return _Fields(from_address, to_address, reply_to, subject, from_name, extra)


def build_message(
    mail: Mail, shop: Shop | None = None, now: datetime | None = None
) -> EmailMessage:
    """The MIME message for `mail`; raises MailBuildError on any unsafe field."""
    f = _checked(mail)
    from_address, to_address, reply_to = f.from_address, f.to_address, f.reply_to
    subject, from_name = f.subject, f.from_name

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
    for name, value in f.extra:
        msg[name] = value

    text, html = mail.body_text, mail.body_html
    if text:
        msg.set_content(text, charset="utf-8")
        if html:
            msg.add_alternative(html, subtype="html", charset="utf-8")
    else:
        msg.set_content(html, subtype="html", charset="utf-8")
    return msg


def as_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=SMTP_POLICY)


# --- the fast path: the same message as bytes, without EmailMessage ---------------------
# build_message costs ~4 ms per mail, nearly all in the header-registry parse and
# policy folding. The batch sender renders with `render_bytes` instead: the same checks
# (`_checked`), headers written directly (RFC 2047 B-encoding split into short encoded
# words, folded with CRLF SP), bodies encoded like EmailMessage.set_content (7bit/8bit
# when every line fits in 78 octets, else base64 or quoted-printable, whichever is
# shorter). Anything unusual (non-ASCII or special characters in an address, "=?" in
# a text that would be read as an encoded word, over-long lines) goes through
# build_message instead, so the fast path never has to be clever.
# tests/test_mime_render.py checks both paths parse to the same headers and bodies.

_SAFE_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]+")
_EW_BYTES = 39  # UTF-8 bytes per encoded word: 52 base64 chars + 12 = 64 <= 75 (RFC 2047)
_MAX_LINE = 78  # SMTP policy max_line_length
_HARD_LINE = 998  # RFC 5322 line limit


class _Unusual(Exception):
    """This mail needs the general path (build_message)."""


def _encoded_words(value: str) -> str:
    """`value` as RFC 2047 B encoded words of UTF-8, split on character boundaries."""
    words: list[bytes] = []
    chunk = b""
    for ch in value:
        b = ch.encode("utf-8")
        if len(chunk) + len(b) > _EW_BYTES and chunk:
            words.append(chunk)
            chunk = b""
        chunk += b
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words)


def _text_header(value: str) -> str:
    """An unstructured header value (Subject, a display name): raw ASCII or RFC 2047."""
    if value.isascii():
        if "=?" in value or len(value) > _HARD_LINE - 40:
            raise _Unusual
        return value
    return _encoded_words(value)


def _address(value: str) -> str:
    if not _SAFE_ADDRESS.fullmatch(value):
        raise _Unusual
    return value


def _named_address(name: str, address: str) -> str:
    address = _address(address)
    if not name:
        return address
    if name.isascii():
        if "=?" in name:
            raise _Unusual
        return formataddr((name, address))
    return f"{_encoded_words(name)} <{address}>"


class HeaderCache:
    """Encoded From / Reply-To lines, shared by the mails of one batch (one shop's
    sender settings repeat on every mail)."""

    def __init__(self) -> None:
        self.from_lines: dict[tuple[str, str], str] = {}
        self.reply_lines: dict[str, str] = {}

    def from_line(self, name: str, address: str) -> str:
        key = (name, address)
        line = self.from_lines.get(key)
        if line is None:
            line = self.from_lines[key] = f"From: {_named_address(name, address)}\r\n"
        return line

    def reply_line(self, address: str) -> str:
        line = self.reply_lines.get(address)
        if line is None:
            line = self.reply_lines[address] = f"Reply-To: {_address(address)}\r\n"
        return line


def _encode_body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF), chosen as set_content does."""
    lines = text.encode("utf-8").splitlines()
    if max((len(x) for x in lines), default=0) <= _MAX_LINE:
        return ("7bit" if text.isascii() else "8bit"), b"\r\n".join(lines) + b"\r\n"
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        raw = b"\r\n".join(lines) + b"\r\n"
        encoded = base64.encodebytes(raw)  # 76-character lines
        return "base64", encoded.replace(b"\n", b"\r\n")
    if len(lines) > 10:  # set_content encodes the LF form then, the CRLF sniff otherwise
        sniff_qp = quoprimime.body_encode((b"\n".join(lines) + b"\n").decode("latin-1"), _MAX_LINE)
    return "quoted-printable", sniff_qp.replace("\n", "\r\n").encode("ascii")


def _part_head(subtype: str, cte: str) -> bytes:
    return f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'.encode()


def render_bytes(
    mail: Mail,
    shop: Shop | None = None,
    now: datetime | None = None,
    cache: HeaderCache | None = None,
) -> bytes:
    """The wire bytes of `mail`: same checks and, once parsed, the same headers and bodies
    as `as_bytes(build_message(mail, shop, now))`, at a fraction of its cost.

    Raises MailBuildError on any unsafe field, exactly as build_message does."""
    f = _checked(mail)
    try:
        return _render(mail, f, shop, now, cache or HeaderCache())
    except _Unusual:
        return as_bytes(build_message(mail, shop, now))


def _render(
    mail: Mail, f: _Fields, shop: Shop | None, now: datetime | None, cache: HeaderCache
) -> bytes:
    message_id = mail.message_id or message_id_for(
        mail.id, f.from_address, shop.code if shop is not None else None
    )
    if not message_id.isascii() or any(c in message_id for c in FORBIDDEN):
        raise _Unusual
    head = [
        cache.from_line(f.from_name, f.from_address),
        f"To: {_address(f.to_address)}\r\n",
    ]
    if f.reply_to:
        head.append(cache.reply_line(f.reply_to))
    head += [
        f"Subject: {_text_header(f.subject)}\r\n",
        f"Date: {format_datetime(now or datetime.now(UTC))}\r\n",
        f"Message-ID: {message_id}\r\n",
        f"X-Automail-Id: {mail.id}\r\n",
    ]
    for name, value in f.extra:
        if not value.isascii() or "=?" in value or len(name) + len(value) > _HARD_LINE - 2:
            raise _Unusual
        head.append(f"{name}: {value}\r\n")
    head.append("MIME-Version: 1.0\r\n")
    text, html = mail.body_text, mail.body_html
    parts = []
    if text:
        parts.append(("plain", *_encode_body(text)))
    if html:
        parts.append(("html", *_encode_body(html)))
    if len(parts) == 1:
        subtype, cte, body = parts[0]
        return "".join(head).encode("ascii") + _part_head(subtype, cte) + b"\r\n" + body
    boundary = f"=_automail_{mail.id}_{secrets.token_hex(8)}"
    if any(boundary.encode() in body for _, _, body in parts):  # pragma: no cover - 2^-64
        raise _Unusual
    head.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n')
    out = ["".join(head).encode("ascii")]
    for subtype, cte, body in parts:
        out += [f"--{boundary}\r\n".encode(), _part_head(subtype, cte), b"\r\n", body, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)
