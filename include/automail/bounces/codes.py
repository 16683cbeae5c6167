"""SMTP reply codes and RFC 3463 enhanced status codes: extraction and hard/soft classification.

Policy (what "hard" means for us): the *address* is wrong and should be cleaned — the user,
the domain or the host does not exist, the mailbox moved, or the domain accepts no mail.
Everything else that failed is "soft": temporary (4xx / 4.x.x), full mailboxes, and policy or
spam blocks (RFC 3463 5.7.x), which are about the sender or content, not the address.
"""

from __future__ import annotations

import re

from automail.bounces.rules import (
    bare_rejection,
    explicit_no_account,
    match_reason,
    sender_refused,
    smtp_stage,
)

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
    for generic in (".0", ".0.0"):  # X.Y.0 is "other" within its subject; X.0.0 says nothing
        specific = [s for s in found if not s.endswith(generic)]
        if specific:
            return specific[0]
    return found[0] if found else None


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
        if decisive in HARD_REASONS and (refused := sender_refused(text)):
            return refused  # 5.1.x beside "blocked using Spamhaus": the sender was refused
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
    reason: str,
    enhanced: str | None,
    context: str,
    remote_status: str | None = None,
    relayed: bool = False,
) -> str:
    """Correct an address reason ("user unknown"...) by what the dialogue and codes show.

    - The reply answered MAIL FROM: the *sender* was refused, whatever the words ("rejected").
    - A worded "user unknown" is a filter ("filtered") when the remote server's own code is
      5.7.x (a policy refusal, RFC 3463) or the reply answered DATA, after the recipient had
      been accepted at RCPT TO. A precise code (5.1.1) from the remote keeps it.
    - A worded "user unknown" under a mailbox- or system-status code (5.2.x "mailbox
      disabled", 5.3.x "mail system") says the mailbox exists: the code's meaning wins,
      unless the reply answered RCPT TO.
    - A *relayed* "user unknown" (another server's reply quoted by the reporting MTA: a
      reply code or a DSN Diagnostic-Code) is proof only with a 5.1.x / 5.5.x code, an
      answer to RCPT TO, or an explicit "no such account" sentence. Filtering gateways
      relay "550 Unknown user" for mail their filter refused; cleaning a customer's
      address on that evidence loses a good customer, keeping it costs one more try.
    """
    stage = smtp_stage(context)
    if stage == "mail" and reason in HARD_REASONS:
        return "rejected"
    bare = bare_rejection(context) if reason == "rejected" else None
    if bare == "named" or (bare and stage == "rcpt"):
        return "userunknown"  # a bare "Rejected" answer to RCPT TO refuses the recipient
    if reason == "userunknown" and (refused := sender_refused(context)):
        return refused
    if reason != "userunknown" or is_decisive(enhanced):
        return reason
    explicit = explicit_no_account(context)
    after_data = stage == "data" and not explicit
    # Under 5.7.x a worded "user unknown" is a policy refusal, except an explicit
    # no-account sentence in the reply to RCPT TO ("554 5.7.1 <a>: Recipient address
    # rejected: Access denied" after RCPT TO is a recipient lookup).
    policy = (remote_status or "").startswith("5.7.") and not (stage == "rcpt" and explicit)
    if policy or after_data:
        return "filtered"
    status = remote_status or enhanced or ""
    if status[2:4] in ("2.", "3.") and stage != "rcpt":
        _, subject, detail = status.split(".")
        return STATUS_FALLBACK.get(f"{subject}.{detail}") or SUBJECT_FALLBACK[subject]
    if (
        relayed
        and stage != "rcpt"
        and status[2:4] not in ("1.", "5.")
        and not explicit_no_account(context)
    ):
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
