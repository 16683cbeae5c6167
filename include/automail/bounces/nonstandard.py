"""Bounces that are not RFC 3464 DSNs: find recipients and their diagnostics in plain text.

MTAs (qmail, Exim, Exchange, Japanese carriers...) write free text. We cut the returned
original away, collect the addresses the explanation mentions, and classify the text that
follows each address; when that slice says nothing useful, the whole explanation is used.
"""

from __future__ import annotations

import itertools
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
from automail.bounces.rules import STAGE_RE as _STAGE_MARK_RE
from automail.bounces.rules import directory_verdict, match_reason, smtp_stage, smtp_stages

MAX_RECIPIENTS = 20  # per bounce, as for DSNs

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
# ("error from remote mail server after RCPT TO:<a>" names a recipient, not a sender.)
_SENDER_CONTEXT_RE = re.compile(
    r"(?:mail from|envelope-from|from|sender)\s*[:=]?\s*(?:(?!rcpt to)[^\n<@]){0,40}"
    r"<?[^\s<>@]+@[^\s<>]+",
    re.I,
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
        # A quote before the local part is punctuation ("'Unknown user 'a@b.jp'"), not atext.
        address = m.group(0).strip(".").lstrip("'`").lower()
        if address and not address.startswith("@"):
            seen.setdefault(address, None)
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
    # A reply code in the text is another server's answer, quoted by the reporting MTA.
    relayed = code is not None
    reason = refine_user_unknown(reason_for(code, status, text), status, context, status, relayed)
    if reason == "userunknown" and unproven(code, status, text, context):
        reason = "filtered"
    return reason, code, status


def unproven(code: int | None, status: str | None, text: str, context: str) -> bool:
    """A worded "user unknown" with no reply code, no status code and no dialogue stage,
    that is not a mailbox host's directory verdict: a gateway's summary line ("a@b [User
    unknown]", "Recipient Not Found") says as often that its filter refused the mail.
    Read as a refusal (soft): cleaning the address on that evidence loses a customer,
    keeping it costs one more attempt, and repeated failures still invalidate it."""
    return (
        code is None
        and status is None
        and smtp_stage(context) is None
        and not directory_verdict(text)
        and not directory_verdict(context)
    )


def segment_for(text: str, addr: str | None, recipients: list[str]) -> str:
    """The lines from the first mention of addr up to the line of another recipient's next
    mention. Whole lines, so that ">>> RCPT To:<a>" (the stage) is part of a's slice;
    the *next* mention, because reports often list everyone twice (a translated block,
    then the English one)."""
    lowered = text.lower()
    if addr is None or addr not in lowered:
        return ""
    first = lowered.find(addr)
    start = lowered.rfind("\n", 0, first) + 1
    later = [p for p in (lowered.find(r, first + 1) for r in recipients if r != addr) if p > first]
    end = max(lowered.rfind("\n", first, min(later)) + 1, first + len(addr)) if later else len(text)
    return text[start:end]


def recipients_from_text(explanation: str, recipients: list[str]) -> list[BounceRecipient]:
    """One BounceRecipient per address (the first MAX_RECIPIENTS), classified on the text
    that follows its mention."""
    delayed = bool(_DELAY_RE.search(explanation))
    out = []
    recipients = recipients[:MAX_RECIPIENTS]
    for addr in [*recipients] if recipients else [None]:
        segment = segment_for(explanation, addr, recipients)
        # The recipient's own line when it carries a known phrase (sendmail: "554 <a>...
        # Remote protocol error", then the next recipient's host line); else its slice;
        # else, when the slice says nothing useful, the whole explanation.
        own_line = segment.split("\n", 1)[0]
        says_something = match_reason(segment) or find_enhanced(segment) or find_smtp_code(segment)
        if match_reason(ADDR_RE.sub(" ", own_line)):  # an address "userunknown@…" is no phrase
            text = own_line
        else:
            text = segment if says_something else explanation
        context = _stage_context(segment, explanation)
        reason, code, status = _classify(text, context)
        outcome = outcome_for(reason, code, status)
        permanent = (code or 0) >= 500 or (status or "").startswith("5.")
        if delayed and not permanent:  # a delay warning is not final, whatever it quotes
            outcome, reason = "soft", "expired" if reason == "undefined" else reason
        out.append(BounceRecipient(addr, outcome, status, code, reason, _diagnostic_line(text)))
    return out


def _stage_context(segment: str, explanation: str) -> str:
    """The text to read this recipient's dialogue stage from: its own slice when that names
    one; else from the last stage named before it (sendmail: "While talking to a: >>> MAIL
    From … <<< 501 …" then the recipients of that dialogue); else the whole report when it
    names a single stage. One dialogue's MAIL FROM refusal is never lent to a recipient of
    another dialogue."""
    if not segment or smtp_stage(segment):
        return segment or explanation
    before = explanation[: explanation.find(segment)]
    found = list(_STAGE_MARK_RE.finditer(before))
    if found:
        return explanation[found[-1].start() :]
    return explanation if len(set(smtp_stages(explanation))) == 1 else segment


def _diagnostic_line(text: str) -> str:
    """The most telling of the first 200 lines: one with a reply code or a known phrase,
    else the first line."""
    lines = [ln.strip() for ln in itertools.islice(text.splitlines(), 2000) if ln.strip()]
    for line in lines[:200]:
        if find_smtp_code(line) or find_enhanced(line) or match_reason(line):
            return one_line(line)
    return one_line(lines[0] if lines else "")
