"""Vocabularies and the mail state machine (B1, B4, B6).

Statuses follow SPEC B1 (unsent, sent, error, cancelled, held) plus `deleted`: a
reviewer's deletion keeps the row (and so its idempotency key) so that the next
creation run does not bring the mail back.
"""

from __future__ import annotations

ORDER_CONFIRMATION = "order_confirmation"
SHIPPING_NOTICE = "shipping_notice"
FOLLOW_UP = "follow_up"
TRANSACTIONAL_KINDS = (ORDER_CONFIRMATION, SHIPPING_NOTICE, FOLLOW_UP)
CAMPAIGN = "campaign"
STEP = "step"
NOTICE = "notice"  # mails to the shop itself (cap reached, pending mails)
MANUAL = "manual"  # written or copied by staff
MAIL_KINDS = (*TRANSACTIONAL_KINDS, CAMPAIGN, STEP, NOTICE, MANUAL)

KIND_LABELS = {
    ORDER_CONFIRMATION: "Order confirmation",
    SHIPPING_NOTICE: "Shipping notice",
    FOLLOW_UP: "Follow-up",
    CAMPAIGN: "Newsletter",
    STEP: "Step mail",
    NOTICE: "Shop notice",
    MANUAL: "Manual",
}

DELIVERY_MODES = ("auto", "manual")
DEVICES = ("pc", "mobile")

UNSENT = "unsent"
SENT = "sent"
ERROR = "error"
CANCELLED = "cancelled"
HELD = "held"
DELETED = "deleted"
MAIL_STATUSES = (UNSENT, SENT, ERROR, CANCELLED, HELD, DELETED)

# Attempt outcomes: in_flight is written before the SMTP transaction; in_doubt is
# what an in_flight attempt becomes when its worker died before recording a reply.
ATTEMPT_OUTCOMES = ("in_flight", "accepted", "temp_fail", "perm_fail", "refused", "in_doubt")

CAMPAIGN_STATUSES = (
    "scheduled",
    "preparing",
    "sending",
    "sent",
    "counting",
    "counted",
    "failed",
    "stopped",
    "cancelled",
)

# Staff actions and the statuses they may start from (seed 000's button rules).
ACTION_FROM: dict[str, tuple[str, ...]] = {
    "send": (UNSENT, ERROR, HELD),
    "resend": (SENT, CANCELLED),
    "cancel": (UNSENT,),
    "uncancel": (CANCELLED,),
    "delete": (UNSENT, HELD, ERROR),
    "release": (HELD,),
}
ROW_ACTION_LABEL = {
    UNSENT: "send",
    ERROR: "send",
    HELD: "send",
    SENT: "resend",
    CANCELLED: "resend",
}


class TransitionRefused(ValueError):
    """A staff action that the mail's current status does not allow."""

    def __init__(self, mail_id: int, action: str, status: str) -> None:
        allowed = ", ".join(ACTION_FROM.get(action, ())) or "none"
        super().__init__(
            f"mail {mail_id}: cannot {action} a mail whose status is '{status}' "
            f"(allowed from: {allowed})"
        )
        self.mail_id = mail_id
        self.action = action
        self.status = status


def check_action(mail_id: int, action: str, status: str) -> None:
    if status not in ACTION_FROM.get(action, ()):
        raise TransitionRefused(mail_id, action, status)
