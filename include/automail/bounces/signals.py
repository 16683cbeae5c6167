"""Header-level signals: is this a bounce, an auto-reply (RFC 3834) or a feedback report?

An auto-reply must never be counted as a bounce, but bounces themselves often carry
``Auto-Submitted: auto-replied`` (Postfix, Exim do), so the decision weighs both sides:
mailer-daemon senders and failure subjects mean "bounce"; auto-reply headers and vacation
subjects mean "auto-reply" only when no bounce signal is present.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import collapse_rfc2231_value

from automail.bounces.mime import header_text

_DAEMON_FROM_RE = re.compile(
    r"mailer[-_]?daemon|post_?master|mail delivery|delivery (status|subsystem|system)"
    r"|mail ?administrator|mail system|returned mail|internet mail delivery|maildelivery"
    r"|microsoft outlook|microsoft exchange|system administrator|bounce|nobody@|daemon@",
    re.I,
)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|returned mail|delivery (status|failure|failed|notification|problem"
    r"|report|has failed|incomplete)|failure notice|mail delivery failed|could not send"
    r"|non[- ]?delivery|nondeliverable|mail system error|returned to sender|not delivered"
    r"|delivery (warning|delayed)|warning: could not|message (delivery|status)|mail error"
    r"|failed to deliver|(returned|bounced) (mail|message)|unzustellbar|non remis"
    r"|エラー|不達|配信(不能|失敗|できません)|送信できません|届きませんでした|未達|返送",
    re.I,
)
_VACATION_SUBJECT_RE = re.compile(
    r"out of (the )?office|auto(matic|matisch)?[ _-]?(reply|response|answer|antwort|reponse)"
    r"|^auto:|autoreply|autoresponder|on vacation|vacation|away from (the |my )?office"
    r"|i am away|i'm away|away until|abwesen|absence|réponse automatique|risposta automatica"
    r"|自動返信|自動応答|自動送信|不在|休暇|留守",
    re.I,
)


# "Automatic reply: <their subject>": what follows the prefix is someone else's subject.
_AUTOREPLY_PREFIX_RE = re.compile(
    r"^\W*(automatic reply|auto(matische antwort)?|out of office( reply| autoreply)?"
    r"|autoreply|réponse automatique|自動返信|自動応答)\W",
    re.I,
)


def get(msg: Message, name: str) -> str:
    return header_text(msg.get(name))


def has_bounce_signals(msg: Message) -> bool:
    subject = get(msg, "Subject")
    if _AUTOREPLY_PREFIX_RE.match(subject):
        subject = ""  # "Automatic reply: Undeliverable: ..." is an auto-reply, not a bounce
    return bool(
        msg.get("X-Failed-Recipients")
        or _DAEMON_FROM_RE.search(get(msg, "From"))
        or _BOUNCE_SUBJECT_RE.search(subject)
    )


def has_autoreply_signals(msg: Message) -> bool:
    auto = get(msg, "Auto-Submitted").lower()
    precedence = get(msg, "Precedence").lower()
    return bool(
        auto.startswith("auto-replied")
        or msg.get("X-Autoreply")
        or msg.get("X-Autorespond")
        or msg.get("X-Autoresponder")
        or msg.get("X-Vacation")
        or precedence in ("auto_reply", "auto-reply")
        or _VACATION_SUBJECT_RE.search(get(msg, "Subject"))
    )


def is_feedback_report(msg: Message, leaf_types: list[str]) -> bool:
    report_type = str(collapse_rfc2231_value(msg.get_param("report-type") or "")).lower()
    return report_type == "feedback-report" or "message/feedback-report" in leaf_types
