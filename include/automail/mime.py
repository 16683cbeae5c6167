"""Building the MIME message of a stored mail, with safe headers (SPEC F4, A7, B10).

- A line break or control character (CR, LF, NUL, VT, FF, ESC, FS, GS, RS, NEL,
  U+2028, U+2029, …) in any header field (subject, From name, To, Reply-To, BCC, extra
  headers), or in what an RFC 2047 encoded word inside it decodes to, raises
  MailBuildError naming the field and value: no header injection.
- Caller text is never taken for an encoded word: text holding "=?" (or non-ASCII, or
  too long for one line) is written as encoded words that decode back to exactly it.
- From is exactly one address; Reply-To, Cc (the shop's, `shops.cc`) and BCC are comma
  lists of at most 1,000 characters (seed 002), each address checked; Cc goes into the
  header and the envelope, BCC only into the envelope. Addresses go out in their wire
  form (`addresses.wire_address`): IDN domains as A-labels; an address that cannot be
  written as it is (angle brackets, spaces, no local part, a non-ASCII local part) is
  refused, whether or not the shop's address check is on.
- Bodies are text/plain, text/html, or multipart/alternative when both, in the shop's
  charset (`shops.charset`, automail.charset): UTF-8 by default, or ISO-2022-JP (strict
  JIS X 0208, 7bit) for recipients that still need it. Text the charset cannot carry
  (①, ㈱, 髙, emoji, half-width kana) raises MailBuildError naming the field and the
  characters: never a `?`.
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
from email import message_from_bytes, policy, quoprimime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import TYPE_CHECKING

from automail.addresses import (
    LIST_MAX,
    AddressError,
    domain_of,
    split_address_list,
    wire_address,
)
from automail.charset import CODECS, UTF8, describe, unencodable

if TYPE_CHECKING:
    from automail.models import Mail, Shop

# CRLF line ends; header lines written back exactly as render_bytes wrote them (no
# refolding, which would decode and re-emit caller text).
SMTP_POLICY = policy.SMTP.clone(refold_source="none")
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
        shown = value[:200] + "…" if isinstance(value, str) and len(value) > 200 else value
        super().__init__(f"{field} {shown!r}: {reason}")
        self.field, self.value, self.reason = field, value, reason


# Refused in every header value: C0 controls but TAB, DEL, C1 controls and the Unicode
# line/paragraph separators — CR, LF, NUL and everything else that str.splitlines(),
# the email package or a mail client may take for a line break (VT, FF, FS, GS, RS,
# U+0085, U+2028, U+2029), plus ESC.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NAMES = {"\r": "CR", "\n": "LF", "\0": "NUL", "\x0b": "VT", "\x0c": "FF", "\x1b": "ESC"}
_CONTROL_NAMES |= {"\x1c": "FS", "\x1d": "GS", "\x1e": "RS", "\x85": "NEL"}
_CONTROL_NAMES |= {"\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR"}
# Anything a lenient decoder (the email package's among them) takes for an RFC 2047
# encoded word: `=?charset?B|Q?text?=`, whitespace (even line breaks) inside allowed.
_LOOKS_ENCODED = re.compile(r"=\?([^?]*)\?([bBqQ])\?([^?]*)\?=")
_REFUSED = "line breaks, NUL and control characters are refused in a header (header injection)"


def _control_problem(value: str) -> str | None:
    """Why `value` cannot be (part of) a header: a control character in it, or in what an
    encoded word inside it decodes to (checked before any decoding could hide it)."""
    for depth in range(3):  # an encoded word may decode to another one
        if found := _CONTROL.search(value):
            ch = found.group()
            what = f"U+{ord(ch):04X} {_CONTROL_NAMES.get(ch, 'control character')}"
            if depth:
                return f"holds an RFC 2047 encoded word that decodes to {what}: {_REFUSED}"
            return f"contains {what} at position {found.start()}: {_REFUSED}"
        if "=?" not in value:
            return None
        value = "".join(_decode_word(m) for m in _LOOKS_ENCODED.finditer(value))
    return None


def _decode_word(word: re.Match[str]) -> str:
    """What a lenient decoder makes of one encoded-word look-alike."""
    charset, cte, text = word.group(1).split("*", 1)[0], word.group(2), word.group(3)
    if cte in "bB":
        text = re.sub(r"[^A-Za-z0-9+/]", "", text)
        if len(text) % 4 == 1:  # one character too many for any padding: dropped
            text = text[:-1]
        raw = base64.b64decode(text + "=" * (-len(text) % 4))
    else:
        raw = re.sub(
            rb"=([0-9A-Fa-f]{2})",
            lambda m: bytes([int(m.group(1), 16)]),
            text.replace("_", " ").encode("utf-8"),
        )
    # The declared charset; unknown (or unusable, e.g. "idna"): decoders guess UTF-8, or
    # show the bytes as they are.
    for codec, errors in ((charset, "replace"), ("utf-8", "strict")):
        try:
            return raw.decode(codec, errors)
        except (LookupError, ValueError):
            continue
    return raw.decode("latin-1")


def _clean(field: str, value: str | None) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MailBuildError(field, value, "must be text")
    value = _unicode(field, value)
    if problem := _control_problem(value):
        raise MailBuildError(field, value, problem)
    return value


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
    """The field's one address in its wire form (see addresses.wire_address)."""
    value = _clean(field, value).strip()
    if not value:
        if required:
            raise MailBuildError(field, value, "an address is required")
        return None
    if len(split_address_list(value)) != 1 or ";" in value:
        raise MailBuildError(field, value, "exactly one address is allowed")
    return _wire(field, value, value)


def _wire(field: str, value: str, address: str) -> str:
    try:
        return wire_address(address)
    except AddressError as exc:
        raise MailBuildError(field, value, str(exc)) from None


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
    return f"<{'.'.join(parts)}@{_id_domain(from_address)}>"


def _id_domain(from_address: str) -> str:
    """The From domain as a Message-ID may carry it: ASCII (an IDN in A-labels)."""
    try:
        return domain_of(wire_address(from_address.strip()))
    except (AddressError, AttributeError):
        return domain_of(from_address or "") or "localhost"


def envelope_recipients(mail: Mail, shop: Shop | None = None) -> list[str]:
    """To plus every Cc and BCC address: the SMTP RCPT list."""
    return [mail.to_address.strip(), *copy_recipients(mail, shop)]


def copy_recipients(mail: Mail, shop: Shop | None) -> list[str]:
    """The shop's Cc and the mail's BCC addresses (RCPT TO after To)."""
    return [
        *split_address_list(shop.cc if shop is not None else None),
        *split_address_list(mail.bcc),
    ]


def _address_list(field: str, value: str | None) -> list[str]:
    """A comma list (Reply-To, Cc, BCC): at most LIST_MAX characters, each address in
    its wire form; MailBuildError naming the field and value otherwise."""
    value = _clean(field, value)
    if len(value) > LIST_MAX:
        raise MailBuildError(field, value, f"longer than {LIST_MAX} characters")
    if ";" in value:
        raise MailBuildError(field, value, "separate addresses with commas, not semicolons")
    return [_wire(field, value, item) for item in split_address_list(value)]


@dataclass(frozen=True)
class _Fields:
    """A mail's header fields, checked; addresses in their wire form."""

    from_address: str
    to_address: str
    reply_to: list[str]
    cc: list[str]
    subject: str
    from_name: str
    extra: list[tuple[str, str]]
    charset: str


def _checked(mail: Mail, shop: Shop | None = None) -> _Fields:
    """Every safety check of a mail's fields (F4); raises MailBuildError naming the field."""
    from_address = _one_address("from_address", mail.from_address, required=True)
    assert from_address is not None
    to_address = _one_address("to_address", mail.to_address, required=True)
    assert to_address is not None
    reply_to = _address_list("reply_to", mail.reply_to)
    cc = _address_list("cc", shop.cc if shop is not None else None)
    _address_list("bcc", mail.bcc)
    subject = _clean("subject", mail.subject)
    from_name = _clean("from_name", mail.from_name)
    extra = []
    for name, value in (mail.extra_headers or {}).items():
        name = _clean("extra_headers", name)
        if not _HEADER_NAME.fullmatch(name):
            raise MailBuildError("extra_headers", name, "not a valid header name")
        if name.lower() in RESERVED:
            raise MailBuildError("extra_headers", name, "this header is set by automail")
        extra.append((name, _clean(f"extra_headers[{name}]", str(value))))
    if not mail.body_text and not mail.body_html:
        raise MailBuildError("body", None, "the mail has neither a text nor an HTML body")
    for field in ("body_text", "body_html"):
        if body := getattr(mail, field):
            _unicode(field, body)
    charset = (shop.charset if shop is not None else None) or UTF8
    texts: list[tuple[str, str | None]] = [("subject", subject), ("from_name", from_name)]
    texts += extra
    texts += [("body_text", mail.body_text), ("body_html", mail.body_html)]
    for field, text in texts:
        if chars := unencodable(text, charset):
            raise MailBuildError(field, text, f"{describe(chars)} cannot be written in {charset}")
    return _Fields(from_address, to_address, reply_to, cc, subject, from_name, extra, charset)


def build_message(
    mail: Mail, shop: Shop | None = None, now: datetime | None = None
) -> EmailMessage:
    """The message `render_bytes` writes, parsed back (for inspection: the UI, tests);
    raises MailBuildError on any unsafe field. `as_bytes` gives its bytes back as written:
    one writer of headers, so no second path can treat caller text differently."""
    return message_from_bytes(render_bytes(mail, shop, now), policy=SMTP_POLICY)


def as_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=SMTP_POLICY)


# --- the writer: headers and bodies as bytes ----------------------------------------------
# Headers are written directly, never through the email package's header registry: it
# decodes RFC 2047 encoded words in whatever text it is handed and, on folding, writes
# the decoded text back, so caller text like `=?utf-8?q?=0D=0ABcc:…?=` became real
# header lines (CVE-2024-6923 class). Here caller text is either written as it is (plain
# ASCII that no receiver decodes: no "=?") or as RFC 2047 B encoded words of UTF-8 that
# decode back to exactly that text; addresses are wire forms (addresses.wire_address),
# safe verbatim. Bodies are encoded like EmailMessage.set_content (7bit/8bit when every
# line fits in 78 octets, else base64 or quoted-printable, whichever is shorter).
# ~0.1 ms per mail against ~4 ms through EmailMessage (bench/send.py).

_EW_BYTES = 39  # UTF-8 bytes per encoded word: 52 base64 chars + 12 = 64 <= 75 (RFC 2047)
_MAX_LINE = 78  # SMTP policy max_line_length
_HARD_LINE = 998  # RFC 5322 line limit
_RAW_MAX = _HARD_LINE - 40  # longest text written raw on one line after its header name
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field-name: printable ASCII but ":"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what bytes.splitlines() splits on


def _encoded_words(value: str, charset: str = UTF8) -> str:
    """`value` as RFC 2047 B encoded words of `charset`, split on character boundaries;
    each ISO-2022-JP word is encoded on its own, so it ends back in ASCII (RFC 1468)."""
    if charset == UTF8:
        words: list[bytes] = []
        chunk = b""
        for ch in value:
            b = ch.encode("utf-8")
            if len(chunk) + len(b) > _EW_BYTES and chunk:
                words.append(chunk)
                chunk = b""
            chunk += b
        words.append(chunk)
    else:
        codec, words, part = CODECS[charset], [], ""
        for ch in value:
            if part and len((part + ch).encode(codec)) > _EW_BYTES:
                words.append(part.encode(codec))
                part = ""
            part += ch
        words.append(part.encode(codec))
    return "\r\n ".join(f"=?{charset}?b?{base64.b64encode(w).decode()}?=" for w in words)


def _text_header(value: str, charset: str = UTF8) -> str:
    """An unstructured header value (Subject, a display name, an extra header): plain ASCII
    as it is; anything else (non-ASCII, "=?" a receiver would decode, too long for one
    line) as encoded words, which a receiver decodes back to exactly `value`."""
    if value.isascii() and "=?" not in value and len(value) <= _RAW_MAX:
        return value
    return _encoded_words(value, charset)


def _named_address(name: str, address: str, charset: str = UTF8) -> str:
    if not name:
        return address
    if name.isascii() and "=?" not in name and len(name) <= _RAW_MAX:
        return formataddr((name, address))  # a quoted string when it holds specials
    return f"{_encoded_words(name, charset)} <{address}>"


class HeaderCache:
    """Encoded From / Reply-To lines, shared by the mails of one batch (one shop's
    sender settings repeat on every mail)."""

    def __init__(self) -> None:
        self.from_lines: dict[tuple[str, str, str], str] = {}

    def from_line(self, name: str, address: str, charset: str = UTF8) -> str:
        key = (name, address, charset)
        line = self.from_lines.get(key)
        if line is None:
            line = f"From: {_named_address(name, address, charset)}\r\n"
            self.from_lines[key] = line
        return line


def _encode_body(text: str, charset: str = UTF8) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF), chosen as set_content does;
    ISO-2022-JP (7-bit by design; each line ends back in ASCII) as 7bit, base64 only
    for a line over the 998-octet limit."""
    if charset != UTF8:
        lines = [line.encode(CODECS[charset]) for line in _LINE_BREAK.split(text)]
        if lines and not lines[-1]:
            lines.pop()
        raw = b"\r\n".join(lines) + b"\r\n"
        if max((len(x) for x in lines), default=0) <= _HARD_LINE:
            return "7bit", raw
        return "base64", base64.encodebytes(raw).replace(b"\n", b"\r\n")
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


def _address_lines(addresses: list[str]) -> str:
    """An address list folded one address per line (a 1,000-character list stays under
    the 998-octet line limit)."""
    return ",\r\n ".join(addresses)


def _part_head(subtype: str, cte: str, charset: str = UTF8) -> bytes:
    return f'Content-Type: text/{subtype}; charset="{charset}"\r\nContent-Transfer-Encoding: {cte}\r\n'.encode()


def render_bytes(
    mail: Mail,
    shop: Shop | None = None,
    now: datetime | None = None,
    cache: HeaderCache | None = None,
) -> bytes:
    """The wire bytes of `mail`. Raises MailBuildError on any unsafe field."""
    f = _checked(mail, shop)
    cache = cache or HeaderCache()
    message_id = mail.message_id or message_id_for(
        mail.id, f.from_address, shop.code if shop is not None else None
    )
    if not message_id.isascii() or _CONTROL.search(message_id) or " " in message_id:
        raise MailBuildError("message_id", message_id, "must be ASCII without spaces or controls")
    head = [cache.from_line(f.from_name, f.from_address, f.charset), f"To: {f.to_address}\r\n"]
    if f.cc:
        head.append(f"Cc: {_address_lines(f.cc)}\r\n")
    if f.reply_to:
        head.append(f"Reply-To: {_address_lines(f.reply_to)}\r\n")
    head += [
        f"Subject: {_text_header(f.subject, f.charset)}\r\n",
        f"Date: {format_datetime(now or datetime.now(UTC))}\r\n",
        f"Message-ID: {message_id}\r\n",
        f"X-Automail-Id: {mail.id}\r\n",
    ]
    head += [f"{name}: {_text_header(value, f.charset)}\r\n" for name, value in f.extra]
    head.append("MIME-Version: 1.0\r\n")
    text, html = mail.body_text, mail.body_html
    parts = []
    if text:
        parts.append(("plain", *_encode_body(text, f.charset)))
    if html:
        parts.append(("html", *_encode_body(html, f.charset)))
    if len(parts) == 1:
        subtype, cte, body = parts[0]
        return "".join(head).encode("ascii") + _part_head(subtype, cte, f.charset) + b"\r\n" + body
    boundary = f"=_automail_{mail.id}_{secrets.token_hex(8)}"
    while any(boundary.encode() in body for _, _, body in parts):  # pragma: no cover - 2^-64
        boundary = f"=_automail_{mail.id}_{secrets.token_hex(8)}"
    head.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n')
    out = ["".join(head).encode("ascii")]
    for subtype, cte, body in parts:
        part_head = _part_head(subtype, cte, f.charset)
        out += [f"--{boundary}\r\n".encode(), part_head, b"\r\n", body, b"\r\n"]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)
