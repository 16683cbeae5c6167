"""MIME helpers for bounce parsing: tolerant decoding on top of the stdlib ``email`` package.

Bounces are the least standard mail there is: charsets are mislabelled (ISO-2022-JP declared
but UTF-8 sent), headers carry raw 8-bit bytes, multiparts lose their boundaries. Every helper
here degrades to "some text" instead of raising.
"""

from __future__ import annotations

import email.policy
import itertools
import re
from collections.abc import Iterator
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from functools import lru_cache

# Tried after the declared charset; Japanese carriers are the usual mislabelling culprits.
# EUC-JP before Shift_JIS: EUC bytes often "decode" as Shift_JIS garbage, rarely vice versa.
_FALLBACK_CHARSETS = ("utf-8", "euc_jis_2004", "cp932", "iso2022_jp_2")
# More tolerant supersets for charsets whose strict codec rejects real-world vendor characters.
_SUPERSETS = {
    "iso-2022-jp": ("iso2022_jp", "iso2022_jp_2", "iso2022_jp_ext", "iso2022_jp_3"),
    "shift_jis": ("cp932", "shift_jis_2004"),
    "sjis": ("cp932", "shift_jis_2004"),
    "x-sjis": ("cp932", "shift_jis_2004"),
    "euc-jp": ("euc_jp", "euc_jis_2004", "cp932"),
    "us-ascii": ("ascii",),
}
_TAG_RE = re.compile(r"<(?:br|p|div|tr|li)\b[^>]*>|</(?:p|div|tr|li)>", re.I)
_ANY_TAG_RE = re.compile(r"<[^>]+>")
_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&amp;": "&"}


def load(raw: bytes) -> Message:
    """Parse raw bytes; compat32 keeps the parser lenient and never defers errors to access time.

    The stdlib parser's cost grows with nesting depth times length (and it recurses until
    RecursionError), so a message declaring more than MAX_BOUNDARIES multipart boundaries
    or more than 4 x MAX_PARTS part headers is read as headers and one raw body: no real
    bounce is built like that.
    """
    flat = _more_than(_BOUNDARY_RE, raw, MAX_BOUNDARIES) or _more_than(_PART_RE, raw, MAX_PARTS * 4)
    return BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=flat)


def _more_than(pattern: re.Pattern[bytes], raw: bytes, limit: int) -> bool:
    return sum(1 for _ in itertools.islice(pattern.finditer(raw), limit + 1)) > limit


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode with the declared charset, then common fallbacks, finally latin-1 (never fails)."""
    if not data:
        return ""
    candidates: list[str] = []
    if b"\x1b$" in data or b"\x1b(" in data:  # raw ISO-2022-JP, whatever the label says
        candidates.extend(_SUPERSETS["iso-2022-jp"])
    if charset:
        cs = charset.strip().strip('"').lower()
        candidates.extend(_SUPERSETS.get(cs, (cs,)))
    candidates.extend(_FALLBACK_CHARSETS)
    for cs in candidates:
        try:
            return data.decode(cs)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


# Work bounds per message (issue 12): what a bounce needs is in its first lines, and a
# hostile message must cost well under a second however it is built.
MAX_HEADER_CHARS = 8_192  # of one header value decoded (stdlib decode_header is quadratic)
MAX_PARTS = 64  # MIME leaves looked at
MAX_DEPTH = 12  # multipart nesting followed
MAX_PART_CHARS = 1_000_000  # of one part's decoded text
MAX_BLOCKS = 128  # header blocks of one message/* part (DSN recipient blocks) rendered
MAX_BOUNDARIES = 64  # multipart boundaries declared before the MIME structure is ignored
_BOUNDARY_RE = re.compile(rb"boundary\s*=", re.I)
_PART_RE = re.compile(rb"^content-type:", re.I | re.M)


def header_text(value: object) -> str:
    """Decode an RFC 2047 / raw 8-bit header value to one line of text (first
    MAX_HEADER_CHARS characters; the same value is decoded once)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _header_text(value[:MAX_HEADER_CHARS])
    return _header_text_uncached(value)


@lru_cache(maxsize=256)
def _header_text(value: str) -> str:
    return _header_text_uncached(value)


def _header_text_uncached(value: object) -> str:
    try:
        chunks = decode_header(value)  # type: ignore[arg-type]
    except Exception:  # malformed encoded-words: show what we have
        return " ".join(str(value).split())
    out = []
    for chunk, cs in chunks:
        if isinstance(chunk, str):  # undecoded plain text; may still hold raw JIS escapes
            chunk = chunk.encode("utf-8", "surrogateescape")
            cs = None
        out.append(decode_bytes(chunk, None if cs in (None, "unknown-8bit") else cs))
    return " ".join("".join(out).split())


def iter_leaves(msg: Message) -> Iterator[Message]:
    """Leaf parts, at most MAX_PARTS, without descending into attached messages (message/*
    are leaves) nor deeper than MAX_DEPTH multiparts."""
    return itertools.islice(_leaves(msg, 0), MAX_PARTS)


def _leaves(msg: Message, depth: int) -> Iterator[Message]:
    if msg.get_content_maintype() == "multipart" and depth < MAX_DEPTH:
        payload = msg.get_payload()
        if isinstance(payload, list) and payload:
            for sub in payload:
                if isinstance(sub, Message):
                    yield from _leaves(sub, depth + 1)
            return
    yield msg


def headers_as_text(msg: Message) -> str:
    return "\n".join(f"{k}: {header_text(v)}" for k, v in msg.items())


def part_text(part: Message) -> str:
    """Readable text of one leaf part; message/* payloads come back as their header blocks."""
    payload = part.get_payload()
    if isinstance(payload, list):  # message/delivery-status, message/rfc822: parsed sub-blocks
        blocks = [p for p in payload[:MAX_BLOCKS] if isinstance(p, Message)]
        texts = [headers_as_text(b) for b in blocks]
        if part.get_content_type() == "message/rfc822" and blocks:
            body = blocks[0].get_payload()
            if isinstance(body, str):
                texts.append(body)
        return "\n\n".join(texts)[:MAX_PART_CHARS]
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        data = str(payload).encode("utf-8", "surrogateescape")
    text = decode_bytes(data[: MAX_PART_CHARS * 4], part.get_content_charset())[:MAX_PART_CHARS]
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def html_to_text(html: str) -> str:
    text = _ANY_TAG_RE.sub("", _TAG_RE.sub("\n", html))
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    return text


def one_line(text: str, limit: int = 500) -> str:
    return " ".join(text.split())[:limit]
