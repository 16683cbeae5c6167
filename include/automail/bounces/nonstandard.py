"""Bounces that are not RFC 3464 DSNs: find recipients and their diagnostics in plain text.

MTAs (qmail, Exim, Exchange, Japanese carriers...) write free text. We cut the returned
original away, collect the addresses the explanation mentions, and classify the text that
follows each address; when that slice says nothing useful, the whole explanation is used.
"""

from __future__ import annotations

import re

from automail.bounces.codes import (
    find_enhanced,
    find_smtp_code,
    outcome_for,
    reason_for,
    refine_user_unknown,
)
from automail.bounces.mime import one_line
from automail.bounces.model import BounceRecipient
from automail.bounces.rules import match_reason

ADDR_RE = re.compile(r"(?<![\w.+=-])[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Mailbox names of services, never the failed recipient of a customer mail.
_SERVICE_LOCALS = frozenset(
    {
        "postmaster",
        "mailer-daemon",
        "mailer_daemon",
        "maildaemon",
        "abuse",
        "noreply",
        "no-reply",
        "do-not-reply",
        "donotreply",
        "hostmaster",
        "webmaster",
        "root",
        "daemon",
    }
)
_LISTED_RE = re.compile(r"^[ \t]*(?:[245]\d\d[ -]+)?[<*\-\"'( \t]*(" + ADDR_RE.pattern + ")", re.M)
# Addresses named as the sender ("MAIL FROM: x", "From: x") are never the failed recipient.
_SENDER_CONTEXT_RE = re.compile(
    r"(?:mail from|envelope-from|from|sender)\s*[:=]?\s*[^\n<@]{0,40}<?[^\s<>@]+@[^\s<>]+", re.I
)
# Text that marks a delay warning rather than a failure.
_DELAY_RE = re.compile(
    r"has not (yet )?been delivered|not yet been delivered|delivery (is |has been )?delayed"
    r"|will (continue|keep) (to )?try|still trying|will retry|temporarily (not )?deliver"
    r"|warning: message .{0,40}delayed",
    re.I,
)


def addresses(text: str) -> list[str]:
    """Distinct addresses in order of first appearance, lowercased."""
    seen: dict[str, None] = {}
    for m in ADDR_RE.finditer(text):
        seen.setdefault(m.group(0).strip(".").lower(), None)
    return list(seen)


def _is_service(address: str) -> bool:
    return address.split("@", 1)[0] in _SERVICE_LOCALS


def pick_recipients(
    explanation: str, exclude: set[str], failed_header: list[str], sent_to: list[str]
) -> list[str]:
    """Failed recipients: explicit header list, else addresses the text lists, else To.

    Bounces list failed addresses at the start of a line ("<a@b>:", "  a@b", "550 <a@b>...");
    addresses inside sentences are more often the sender, a helpdesk or a quoted header.
    """
    if failed_header:  # Exim's X-Failed-Recipients is authoritative
        return failed_header
    senders = set(addresses(" ".join(_SENDER_CONTEXT_RE.findall(explanation))))
    skip = exclude | senders
    listed = [a.strip(".").lower() for a in _LISTED_RE.findall(explanation)]
    listed = [a for a in dict.fromkeys(listed) if not _is_service(a)]
    found = [a for a in addresses(explanation) if not _is_service(a)]
    for group in (
        [a for a in listed if a not in skip],
        [a for a in found if a in sent_to],  # named in the text and in the returned To
        [a for a in found if a not in skip],
        [a for a in sent_to if a not in exclude],
        listed,
    ):
        if group:
            return group
    return []


def _classify(text: str, context: str) -> tuple[str, int | None, str | None]:
    status, code = find_enhanced(text), find_smtp_code(text)
    reason = refine_user_unknown(reason_for(code, status, text), status, context, status)
    return reason, code, status


def segment_for(text: str, addr: str | None, recipients: list[str]) -> str:
    """Text from the first mention of addr up to the next recipient's first mention."""
    lowered = text.lower()
    if addr is None or addr not in lowered:
        return ""
    start = lowered.find(addr)
    later = [p for p in (lowered.find(r) for r in recipients if r != addr) if p > start]
    return text[start : min(later) if later else len(text)]


def recipients_from_text(explanation: str, recipients: list[str]) -> list[BounceRecipient]:
    """One BounceRecipient per address, classified on the text that follows its mention."""
    delayed = bool(_DELAY_RE.search(explanation))
    out = []
    for addr in [*recipients] if recipients else [None]:
        segment = segment_for(explanation, addr, recipients)
        # The slice after the address is most precise; fall back to the whole explanation.
        says_something = match_reason(segment) or find_enhanced(segment) or find_smtp_code(segment)
        text = segment if says_something else explanation
        reason, code, status = _classify(text, explanation)
        outcome = outcome_for(reason, code, status)
        permanent = (code or 0) >= 500 or (status or "").startswith("5.")
        if delayed and not permanent:  # a delay warning is not final, whatever it quotes
            outcome, reason = "soft", "expired" if reason == "undefined" else reason
        out.append(BounceRecipient(addr, outcome, status, code, reason, _diagnostic_line(text)))
    return out


def _diagnostic_line(text: str) -> str:
    """The most telling line: one with a reply code or a known phrase, else the first line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in lines:
        if find_smtp_code(line) or find_enhanced(line) or match_reason(line):
            return one_line(line)
    return one_line(lines[0] if lines else "")
