"""Amazon SES notifications (JSON, optionally wrapped in an SNS envelope) sent by mail."""

from __future__ import annotations

import json
from typing import Any

from automail.bounces.codes import find_enhanced, find_smtp_code, outcome_for, reason_for
from automail.bounces.dsn import strip_diagnostic_type
from automail.bounces.mime import one_line
from automail.bounces.model import BounceRecipient, ParsedBounce
from automail.bounces.original import WANTED, clean_message_id


def _load_notification(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    if start < 0 or "notificationType" not in text:
        return None
    try:
        data, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):  # SNS envelope
        try:
            data = json.loads(data["Message"], strict=False)
        except ValueError:
            return None
    return data if isinstance(data, dict) and "notificationType" in data else None


def _original(mail: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    headers: dict[str, str] = {}
    for item in mail.get("headers") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            headers.setdefault(item["name"].lower(), str(item.get("value", "")))
    wanted = {k: headers[k] for k in WANTED if k in headers}
    common = mail.get("commonHeaders") or {}
    if "to" not in wanted and isinstance(common.get("to"), list):
        wanted["to"] = ", ".join(map(str, common["to"]))
    if "subject" not in wanted and isinstance(common.get("subject"), str):
        wanted["subject"] = common["subject"]
    return clean_message_id(headers.get("message-id")), wanted


def parse_ses(text: str) -> ParsedBounce | None:
    """ParsedBounce for a Bounce/Complaint/Delivery notification, None if text is not one."""
    data = _load_notification(text)
    if data is None:
        return None
    kind = str(data.get("notificationType", "")).lower()
    mail = given if isinstance(given := data.get("mail"), dict) else {}
    message_id, headers = _original(mail)
    recipients = []
    if kind == "bounce":
        bounce = data.get("bounce") or {}
        transient = str(bounce.get("bounceType", "")).lower() != "permanent"
        for item in bounce.get("bouncedRecipients") or []:
            diag = strip_diagnostic_type(str(item.get("diagnosticCode", "")))
            status = find_enhanced(str(item.get("status", ""))) or find_enhanced(diag)
            code = find_smtp_code(diag)
            reason = reason_for(code, status, diag + " " + str(bounce.get("bounceSubType", "")))
            outcome = "soft" if transient else outcome_for(reason, code, status)
            addr = str(item.get("emailAddress", "")).lower() or None
            recipients.append(BounceRecipient(addr, outcome, status, code, reason, one_line(diag)))
        return ParsedBounce("nonstandard", tuple(recipients), message_id, headers)
    if kind == "complaint":
        items = (data.get("complaint") or {}).get("complainedRecipients") or []
        reason, out_kind = "feedback", "feedback"
    elif kind == "delivery":
        items = [{"emailAddress": a} for a in (data.get("delivery") or {}).get("recipients", [])]
        reason, out_kind = "delivered", "nonstandard"
    else:
        return None
    for item in items:
        addr = str(item.get("emailAddress", "")).lower() or None
        recipients.append(BounceRecipient(addr, "none", None, None, reason, reason))
    return ParsedBounce(out_kind, tuple(recipients), message_id, headers)
