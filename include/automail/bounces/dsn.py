"""RFC 3464 delivery status notifications: per-recipient fields -> BounceRecipient."""

from __future__ import annotations

import re
from dataclasses import replace

from automail.bounces.codes import (
    HARD_REASONS,
    find_enhanced,
    find_smtp_code,
    outcome_for,
    reason_for,
    refine_user_unknown,
)
from automail.bounces.mime import one_line
from automail.bounces.model import BounceRecipient
from automail.bounces.nonstandard import segment_for
from automail.bounces.rules import account_disabled, match_reason

DSN_TYPES = ("message/delivery-status", "message/global-delivery-status", "text/delivery-status")
_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_ADDR_RE = re.compile(r"[^\s<>;:\"'(),\[\]]+@[A-Za-z0-9.-]+[A-Za-z0-9]")
_RECIPIENT_KEYS = ("final-recipient", "original-recipient", "x-actual-recipient")
# Action values that mean the message left our hands successfully.
_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")


def parse_fields(text: str) -> list[dict[str, str]]:
    """Split a delivery-status body into field blocks, joining folded lines."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = None
    for line in text.replace("\r", "").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last:
            current[last] += " " + line.strip()
            continue
        m = _FIELD_RE.match(line)
        if m:
            last = m.group(1).lower()
            # A repeated recipient field without a blank line starts a new recipient block.
            if last in ("final-recipient",) and last in current:
                blocks.append(current)
                current = {}
            current[last] = m.group(2).strip()
    if current:
        blocks.append(current)
    return blocks


def address_of(value: str | None) -> str | None:
    """Address from 'rfc822; <User@Example.jp>' (type prefix optional), lowercased."""
    if not value:
        return None
    m = _ADDR_RE.search(value.split(";", 1)[-1]) or _ADDR_RE.search(value)
    return m.group(0).strip(".").lower() if m else None


def strip_diagnostic_type(value: str) -> str:
    """'smtp; 550 5.1.1 ...' -> '550 5.1.1 ...' (the diagnostic type is noise)."""
    head, sep, rest = value.partition(";")
    return rest.strip() if sep and len(head) < 12 and " " not in head.strip() else value.strip()


MAX_RECIPIENTS = 20  # per DSN: we send to one address (and a few BCCs) per mail


def recipients_from_dsn(text: str, human_text: str = "") -> list[BounceRecipient]:
    """BounceRecipients from the delivery-status fields (the first MAX_RECIPIENTS);
    human_text helps when codes are vague."""
    fields = parse_fields(text)
    blocks = [b for b in fields if any(k in b for k in _RECIPIENT_KEYS)]
    blocks = blocks[:MAX_RECIPIENTS]
    addrs = [a for b in blocks for k in _RECIPIENT_KEYS if (a := address_of(b.get(k)))]
    found = [_recipient(block, human_text, addrs) for block in blocks]
    reporter = next((b["reporting-mta"] for b in fields if "reporting-mta" in b), "")
    if _RULE_BOUNCER_RE.search(reporter):
        found = [_as_rule_bounce(r) for r in found]
    return found


# Amazon SES *receiving* holds no mailboxes: a DSN it reports comes from a receipt rule's
# Bounce action, whose reply ("550 5.1.1 Mailbox does not exist" is one of its presets)
# the receiving domain's owner chose — a filter's verdict, not an address lookup.
_RULE_BOUNCER_RE = re.compile(r"\binbound-smtp\.[a-z0-9-]+\.amazonaws\.com\b", re.I)


def _as_rule_bounce(r: BounceRecipient) -> BounceRecipient:
    if r.reason not in HARD_REASONS:
        return r
    return replace(r, outcome="soft", reason="filtered")


def _refined(current: str | None, candidate: str | None) -> str | None:
    """Prefer a specific candidate code (5.1.1) over a generic one (5.0.0) of the same class."""
    if not current:
        return candidate
    if candidate and not candidate.endswith(".0.0") and candidate[0] == current[0]:
        return candidate
    return current


def _recipient(block: dict[str, str], human_text: str, addrs: list[str]) -> BounceRecipient:
    recipient = (
        address_of(block.get("original-recipient"))
        or address_of(block.get("final-recipient"))
        or address_of(block.get("x-actual-recipient"))
    )
    action = block.get("action", "").strip().lower().split(" ")[0]
    diag = strip_diagnostic_type(block.get("diagnostic-code", ""))
    # The remote server's own code (in the diagnostic) beats the reporting MTA's summary.
    remote_status = find_enhanced(diag)
    status = _refined(find_enhanced(block.get("status", "")), remote_status)
    smtp_code = find_smtp_code(diag)
    # Some MTAs (OpenSMTPD...) put only "5.0.0" in the fields and the real reply in the
    # human-readable part: use the lines about this recipient there.
    segment = segment_for(human_text, recipient, addrs)
    if segment and smtp_code is None and not match_reason(diag):
        status = _refined(status, find_enhanced(segment))
        smtp_code = find_smtp_code(segment)
        diag = diag if len(diag) > 8 else one_line(segment)
    if action in _SUCCESS_ACTIONS or (status or "").startswith("2."):
        return BounceRecipient(
            recipient, "none", status, smtp_code, "delivered", one_line(diag or action)
        )
    # Vague diagnostic: add what the human-readable part says about this recipient.
    context = diag + "\n" + (segment or human_text)
    text = diag if match_reason(diag) else context
    # A Diagnostic-Code or a reply code is another server's answer, relayed to us.
    relayed = bool(diag) or smtp_code is not None
    reason = refine_user_unknown(
        reason_for(smtp_code, status, text), status, context, remote_status, relayed
    )
    if reason == "userunknown" and account_disabled(human_text):
        reason = "suspend"  # "the account is disabled": it exists, a reply said "unknown"
    outcome = outcome_for(reason, smtp_code, status)
    if action == "failed" and reason in HARD_REASONS and (status or "").startswith("4.1."):
        outcome = "hard"  # an unknown-address reply repeated until the MTA gave up
    if action == "delayed":  # still queued: whatever the wording, nothing is final yet
        outcome = "soft"
        reason = "expired" if reason == "undefined" else reason
    return BounceRecipient(
        recipient,
        outcome,
        status,
        smtp_code,
        reason,
        one_line(diag or block.get("status", "") or action),
    )
