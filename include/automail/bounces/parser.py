"""Parse a received bounce / DSN / auto-reply / feedback report into a ParsedBounce.

Order of decisions: feedback report (ARF), Amazon SES JSON, RFC 3464 DSN, auto-reply,
free-text bounce, unknown. Malformed input never raises: it comes back as kind "unknown".
"""

from __future__ import annotations

import re
from dataclasses import replace
from email.message import Message

from automail.bounces.codes import classify_smtp
from automail.bounces.dsn import DSN_TYPES, address_of, parse_fields, recipients_from_dsn
from automail.bounces.mime import iter_leaves, load, part_text
from automail.bounces.model import BounceRecipient, ParsedBounce
from automail.bounces.nonstandard import addresses, pick_recipients, recipients_from_text
from automail.bounces.original import (
    WANTED,
    clean_message_id,
    find_original_headers,
    split_original,
)
from automail.bounces.rules import match_reason
from automail.bounces.ses import parse_ses
from automail.bounces.signals import (
    get,
    has_autoreply_signals,
    has_bounce_signals,
    is_feedback_report,
)

__all__ = ["BounceRecipient", "ParsedBounce", "classify_smtp", "parse_bounce"]

_OWN_HEADERS = ("From", "To", "Return-Path", "Reply-To", "Delivered-To", "X-Original-To", "Sender")
# A bounce relayed through (or about) a mailing list names the list's own addresses in these:
# never the failed recipient.
_LIST_HEADERS = (
    "List-Id",
    "List-Post",
    "List-Owner",
    "List-Help",
    "List-Subscribe",
    "List-Unsubscribe",
    "Mailing-List",
    "X-ML-Name",
    "Errors-To",
)
# A bounce larger than this is cut: its tail is the returned original (the explanation,
# the DSN fields and the returned headers come first), and the stdlib parser costs about
# a microsecond per line, so 512 KB keeps a hostile message well under a second.
_MAX_BYTES = 512_000
# The MTA's own words come first and are short; beyond this it is quoted text or an attack.
MAX_EXPLANATION_CHARS = 64_000
_EMBEDDED_DSN_RE = re.compile(r"^(final|original)-recipient:", re.I | re.M)
_INTRO_RE = re.compile(
    r"could not be delivered|couldn't be delivered|undeliverable|delivery (has )?failed"
    r"|permanent (fatal )?error|wasn't able to deliver|unable to deliver|was not delivered"
    r"|delivery to the following recipient|failed permanently|returned to sender"
    r"|following address(es)? had (permanent|delivery)|did not reach|not be delivered"
    r"|not a member of (this|the) (mailing )?list"
    r"|送信できません|配信できません|届きませんでした|宛先不明",
    re.I,
)


def parse_bounce(raw: bytes) -> ParsedBounce:
    """Parse raw message bytes. Never raises; unparseable input is kind "unknown"."""
    try:
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        return _parse(bytes(raw[:_MAX_BYTES]))
    except Exception:  # hostile input must not break the bounce pipeline
        return ParsedBounce("unknown")


def _forwarded_report(msg: Message) -> Message | None:
    """A delivery report attached whole to a gateway's notice (a virus scanner or mail
    filter forwarding the DSN it received as message/rfc822): the report to read."""
    parts = msg.get_payload() if msg.is_multipart() else []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Message) or part.get_content_type() != "message/rfc822":
            continue
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        if (
            isinstance(inner, Message)
            and inner.get_content_type() == "multipart/report"
            and "delivery-status" in str(inner.get_param("report-type") or "")
        ):
            return inner
    return None


def _parse(raw: bytes) -> ParsedBounce:
    return _parse_message(load(raw))


def _parse_message(msg: Message, depth: int = 0) -> ParsedBounce:
    leaves = list(iter_leaves(msg))
    leaf_types = [p.get_content_type() for p in leaves]
    # Text parts, plus a multipart whose boundary never matched (its raw body is all we have).
    texts = [
        part_text(p)
        for p in leaves
        if p.get_content_maintype() in ("text", "multipart")
        and "rfc822-header" not in p.get_content_type()
    ]
    body = "\n\n".join(texts)
    original = find_original_headers(msg, body)
    # Auto-replies (and some Exchange NDRs) return no headers but answer our Message-ID.
    message_id = clean_message_id(original.get("message-id") or get(msg, "In-Reply-To"))
    headers = {k: original[k] for k in WANTED if k in original}
    sent_to = addresses(headers.get("to", ""))

    if is_feedback_report(msg, leaf_types):
        return ParsedBounce("feedback", _feedback_recipients(leaves, sent_to), message_id, headers)
    ses = parse_ses(body) if "notificationType" in body else None
    if ses is not None:
        return ses
    explanation, _ = split_original(body)
    explanation = explanation[:MAX_EXPLANATION_CHARS]
    dsn_text = "\n\n".join(part_text(p) for p in leaves if p.get_content_type() in DSN_TYPES)
    if not dsn_text and _EMBEDDED_DSN_RE.search(body):
        dsn_text = body  # RFC 3464 fields pasted into the text part (WorkMail, broken MIME)
    recipients = recipients_from_dsn(dsn_text, explanation) if dsn_text else []
    if len(recipients) == 1 and recipients[0].recipient is None and len(sent_to) == 1:
        # Final-Recipient was a file path or "@host": the returned To names the address.
        recipients = [replace(recipients[0], recipient=sent_to[0])]
    if recipients:
        return ParsedBounce("dsn", tuple(recipients), message_id, headers)
    if depth == 0 and (forwarded := _forwarded_report(msg)) is not None:
        return _parse_message(forwarded, depth + 1)  # one level: a report inside a report inside…

    bounce_signals = has_bounce_signals(msg)
    if has_autoreply_signals(msg) and not bounce_signals:
        return ParsedBounce("autoreply", _autoreply_recipients(msg), message_id, headers)
    if bounce_signals or (_INTRO_RE.search(explanation) and match_reason(explanation)):
        return _nonstandard(msg, explanation, original, message_id)
    return ParsedBounce("unknown", (), message_id, headers)


def _nonstandard(
    msg: Message, explanation: str, original: dict[str, str], message_id: str | None
) -> ParsedBounce:
    # Addresses of the bounce itself and of the original sender are never failed recipients.
    own = set(addresses(original.get("from", "") + " " + original.get("return-path", "")))
    for name in (*_OWN_HEADERS, *_LIST_HEADERS):
        own.update(addresses(get(msg, name)))
    failed = addresses(get(msg, "X-Failed-Recipients"))
    sent_to = addresses(original.get("to", ""))
    own.difference_update(sent_to)
    recipients = pick_recipients(explanation, own, failed, sent_to)
    headers = {k: original[k] for k in WANTED if k in original}
    return ParsedBounce(
        "nonstandard", tuple(recipients_from_text(explanation, recipients)), message_id, headers
    )


def _autoreply_recipients(msg: Message) -> tuple[BounceRecipient, ...]:
    """The replying address itself, outcome "none": an absence says nothing about validity."""
    found = addresses(get(msg, "From")) or addresses(get(msg, "Reply-To"))
    subject = get(msg, "Subject")
    return (
        BounceRecipient(found[0] if found else None, "none", None, None, "vacation", subject[:500]),
    )


def _feedback_recipients(leaves: list[Message], sent_to: list[str]) -> tuple[BounceRecipient, ...]:
    """ARF: Original-Rcpt-To names the complaining recipient (optional in RFC 5965)."""
    out = []
    for part in leaves:
        if part.get_content_type() != "message/feedback-report":
            continue
        for block in parse_fields(part_text(part)):
            addr = address_of(block.get("original-rcpt-to"))
            kind = block.get("feedback-type", "abuse")
            out.append(BounceRecipient(addr, "none", None, None, "feedback", kind[:500]))
    if len(out) == 1 and out[0].recipient is None and len(sent_to) == 1:
        out = [replace(out[0], recipient=sent_to[0])]
    return tuple(out) or (BounceRecipient(None, "none", None, None, "feedback", "feedback"),)
