"""SMTP reply codes and RFC 3463 enhanced status codes: extraction and hard/soft classification.

Policy (what "hard" means for us): the *address* is wrong and should be cleaned — the user,
the domain or the host does not exist, the mailbox moved, or the domain accepts no mail.
Everything else that failed is "soft": temporary (4xx / 4.x.x), full mailboxes, and policy or
spam blocks (RFC 3463 5.7.x), which are about the sender or content, not the address.
"""

from __future__ import annotations

import re

from automail.bounces.rules import match_reason, rejected_after_data

HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
NONE_REASONS = frozenset({"delivered", "feedback", "vacation"})

# class.subject.detail; look-arounds keep IP addresses and version numbers out.
ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
# A failure reply code is 4xx/5xx followed by a space, a dash (multi-line reply), a colon
# (Yahoo: "554: delivery error") or the end of the line.
SMTP_CODE_RE = re.compile(r"(?<![\w.:/#-])([45][0-5]\d)(?=[ \t:-]|$)", re.M)

# Specific codes that name the problem precisely: they win over wording.
DECISIVE_STATUS = {
    "5.1.1": "userunknown",  # bad destination mailbox address
    "5.1.2": "hostunknown",  # bad destination system address
    "5.1.3": "userunknown",  # bad destination mailbox address syntax
    "5.1.6": "hasmoved",  # destination mailbox has moved, no forwarding address
    "5.1.7": "rejected",  # bad *sender* mailbox syntax: not the recipient's fault
    "5.1.8": "rejected",  # bad *sender* system address
    "5.2.2": "mailboxfull",  # persistent, but the address itself is right: soft
    "5.2.3": "exceedlimit",
    "5.3.4": "mesgtoobig",
    "5.7.13": "suspend",
    "5.7.23": "authfailure",
    "5.7.25": "requireptr",
    "5.7.26": "authfailure",
    "5.7.509": "authfailure",
}

# Fallbacks by (subject, detail) or subject alone when no wording matched.
STATUS_FALLBACK = {
    "1.0": "userunknown",
    "1.4": "userunknown",
    "1.10": "notaccept",  # RFC 7505 null MX (Microsoft also uses it for unknown recipients)
    "1.7": "rejected",
    "1.8": "rejected",
    "2.1": "suspend",
    "2.4": "mailererror",
    "3.1": "systemfull",
    "3.5": "systemerror",
    "4.4": "hostunknown",
    "4.6": "networkerror",
    "4.7": "expired",
    "7.1": "rejected",
    "7.7": "securityerror",
    "7.9": "policyviolation",
}
# Last resort: RFC 5321 reply codes that carry a meaning of their own.
REPLY_CODE_FALLBACK = {
    421: "toomanyconn",
    450: "onhold",
    451: "systemerror",
    452: "mailboxfull",
    552: "mailboxfull",
}
SUBJECT_FALLBACK = {
    "1": "undefined",
    "2": "mailboxfull",
    "3": "systemerror",
    "4": "networkerror",
    "5": "syntaxerror",
    "6": "contenterror",
    "7": "blocked",
}


def find_enhanced(text: str) -> str | None:
    """First RFC 3463 code in text, preferring a specific one over a generic X.0.0."""
    found = [".".join(m.groups()) for m in ENHANCED_RE.finditer(text or "")]
    specific = [s for s in found if not s.endswith(".0.0")]
    return specific[0] if specific else found[0] if found else None


def find_smtp_code(text: str) -> int | None:
    m = SMTP_CODE_RE.search(text or "")
    return int(m.group(1)) if m else None


def is_temporary(smtp_code: int | None, enhanced: str | None) -> bool:
    return (smtp_code is not None and 400 <= smtp_code < 500) or bool(
        enhanced and enhanced.startswith("4.")
    )


def reason_for(smtp_code: int | None, enhanced: str | None, text: str = "") -> str:
    """Machine reason: explicit wording, decisive status code, wording, generic code meaning."""
    priority = match_reason(text, "priority")
    if priority:
        return priority
    if enhanced:
        decisive = DECISIVE_STATUS.get("5" + enhanced[1:])
        if decisive:
            return decisive
    by_text = match_reason(text, "specific")
    if by_text:
        return by_text
    if enhanced:
        _, subject, detail = enhanced.split(".")
        fallback = STATUS_FALLBACK.get(f"{subject}.{detail}") or SUBJECT_FALLBACK.get(subject)
        if fallback and not (subject == "0" or enhanced.endswith(".0.0")):
            return fallback
    return match_reason(text) or REPLY_CODE_FALLBACK.get(smtp_code or 0, "undefined")


def is_decisive(enhanced: str | None) -> bool:
    return enhanced is not None and "5" + enhanced[1:] in DECISIVE_STATUS


def refine_user_unknown(
    reason: str, enhanced: str | None, context: str, remote_status: str | None = None
) -> str:
    """Downgrade a worded "user unknown" to "filtered" when the reply shows it is a filter.

    Two tells: the remote server's own code is 5.7.x (a policy refusal, RFC 3463), or the reply
    answered DATA, after the recipient had been accepted at RCPT TO. A precise code (5.1.1)
    from the remote keeps it a user-unknown.
    """
    if reason != "userunknown" or is_decisive(enhanced):
        return reason
    if (remote_status or "").startswith("5.7.") or rejected_after_data(context):
        return "filtered"
    return reason


def outcome_for(reason: str, smtp_code: int | None = None, enhanced: str | None = None) -> str:
    if reason in NONE_REASONS:
        return "none"
    if is_temporary(smtp_code, enhanced):
        return "soft"
    return "hard" if reason in HARD_REASONS else "soft"


def classify_smtp(smtp_code: int | None, enhanced: str | None, text: str = "") -> tuple[str, str]:
    """Classify an SMTP reply (also used for immediate failures at send time).

    Returns (outcome "hard"|"soft", reason). Codes missing from the arguments are looked up
    in the text, so ``classify_smtp(None, None, "550 5.1.1 User unknown")`` works too.
    """
    text = text or ""
    if enhanced is None:
        enhanced = find_enhanced(text)
    if smtp_code is None:
        smtp_code = find_smtp_code(text)
    reason = refine_user_unknown(reason_for(smtp_code, enhanced, text), enhanced, text, enhanced)
    outcome = outcome_for(reason, smtp_code, enhanced)
    return ("soft" if outcome == "none" else outcome), reason
