"""Locate the copy of the *original* message inside a bounce and read a few of its headers."""

from __future__ import annotations

import email.policy
import re
from email.message import Message
from email.parser import HeaderParser

from automail.bounces.mime import header_text, iter_leaves, part_text

WANTED = ("x-automail-id", "to", "subject", "return-path")
_INTERNAL = ("message-id", "from")  # read too, but not part of ParsedBounce.original_headers

# Separators MTAs put between their explanation and the returned message.
_MARKER_RE = re.compile(
    r"^[ \t>]*(?:"
    r"-+ ?(?:original message|original mail|forwarded message|returned message"
    r"|unsent message|undelivered message|the header of the original message|message headers"
    r"|this is a copy of the message|below this line is a copy|original message headers"
    r"|rejected message|unsent message follows)"
    r"|-+ ?(?:\w+ )?(?:message|headers?) (?:follows?|below)"
    r"|--- below this line is a copy of the message"
    r"|original message (?:headers?|follows)|original message header:?"
    r"|content-type: message/rfc822|content-type: text/rfc822-headers"
    r"|\W*(?:元の|送信された|返送された)(?:メッセージ|メール)"
    r")",
    re.I | re.M,
)
# A non-indented header line: the returned message starts here when no separator was used.
_HEADER_START_RE = re.compile(
    r"^(?:Received|Return-Path|Message-I[dD]|DKIM-Signature|MIME-Version|X-Mailer"
    r"|Delivered-To):[ \t]",
    re.M,
)
_WANTED_LINE_RE = re.compile(
    r"^[ \t>]*(message-id|x-automail-id|to|subject|return-path|from)[ \t]*:[ \t]*(.*)$",
    re.I | re.M,
)
_ID_RE = re.compile(r"<\s*([^<>\s]+@[^<>\s]+)\s*>|([^<>\s]+@[^<>\s]+)")


def split_original(text: str) -> tuple[str, str]:
    """(explanation, returned message) split at the first separator or header block."""
    candidates = [m.start() for m in (_MARKER_RE.search(text), _HEADER_START_RE.search(text)) if m]
    if not candidates:
        return text, ""
    cut = min(candidates)
    return text[:cut], text[cut:]


def clean_message_id(value: str | None) -> str | None:
    if not value:
        return None
    m = _ID_RE.search(value)
    if not m:
        return None
    return (m.group(1) or m.group(2)).strip()


def _from_message(msg: Message) -> dict[str, str]:
    found = {}
    for key in (*_INTERNAL, *WANTED):
        value = msg.get(key)
        if value is not None:
            found[key] = header_text(value)
    return found


def _from_text(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for m in _WANTED_LINE_RE.finditer(text):
        key = m.group(1).lower()
        if key not in found and m.group(2).strip():
            found[key] = header_text(m.group(2).strip())
    return found


def find_original_headers(msg: Message, body_text: str) -> dict[str, str]:
    """Headers of the returned original: attached message first, then quoted text."""
    found: dict[str, str] = {}
    for part in iter_leaves(msg):
        if part is msg:
            continue
        ctype = part.get_content_type()
        sub: dict[str, str] = {}
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                sub = _from_message(payload[0])
            # A blank line before the headers turns them into body text: read that too.
            for key, value in _from_text(part_text(part)).items():
                sub.setdefault(key, value)
        elif "rfc822-header" in ctype or ctype == "message/global-headers":
            parser = HeaderParser(policy=email.policy.compat32)
            sub = _from_message(parser.parsestr(part_text(part).lstrip()))
        for key, value in sub.items():
            found.setdefault(key, value)
    _, quoted = split_original(body_text)
    for text in (quoted, body_text):
        for key, value in _from_text(text).items():
            found.setdefault(key, value)
    return found
