"""Staff actions on mails (seed 000 items 12–16, B4, B5, A4 review).

Every action checks each mail's status against `states.ACTION_FROM`, refuses mails
a sender holds a live claim on, writes a `MailEvent` per mail with the actor and one
`StaffAction` row (who, when, how many, which ids, what was refused). Refusals never
stop the rest of a bulk action: each refused mail gets its own message.

Sending goes through `automail.sending.send_now`, the send DAG's own claim/batch/
attempt code; this module only vets, records who asked, and reports the outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from automail import settings
from automail.addresses import check_address
from automail.db import take_write_lock
from automail.models import Mail, MailEvent, StaffAction
from automail.sending.status import change_status_many
from automail.states import (
    ACTION_FROM,
    CANCELLED,
    DELETED,
    MANUAL,
    UNSENT,
    TransitionRefused,
    check_action,
)

CHUNK = 1000
MAX_REFUSALS_KEPT = 100  # refusal messages kept in the audit row; the count is always exact

# Plain status moves: action -> target status.
TARGET = {
    "cancel": CANCELLED,
    "uncancel": UNSENT,
    "delete": DELETED,
    "release": UNSENT,
}
SEND_ACTIONS = ("send", "resend")
ALL_ACTIONS = (*TARGET, *SEND_ACTIONS)


MAX_MAIL_ID = 2**63 - 1  # BIGINT: larger numbers cannot name a mail on either store


class ActionError(ValueError):
    """The whole action was refused (bad input, mail server stopped...)."""


class CopySavedNotSent(ActionError):
    """Copy-and-send: the copy is saved (`new_mail_id`) but sending it was refused."""

    def __init__(self, new_mail_id: int, reason: str) -> None:
        super().__init__(f"the copy was saved as mail {new_mail_id}, but {reason}")
        self.new_mail_id = new_mail_id


@dataclass
class ActionResult:
    action: str
    actor: str
    requested: int
    done: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    refused_count: int = 0
    staff_action_id: int | None = None
    new_mail_id: int | None = None  # copy
    sent: list[int] = field(default_factory=list)  # send: accepted by the SMTP server
    failed: list[int] = field(default_factory=list)  # send: not accepted (retry or error)
    send_summary: Any = None

    def summary(self) -> str:
        parts = [f"{self.action}: {len(self.done)} of {self.requested} mail(s) done"]
        if self.action in SEND_ACTIONS:
            parts.append(f"{len(self.sent)} accepted by the SMTP server, {len(self.failed)} not")
        if self.new_mail_id is not None:
            parts.append(f"new mail {self.new_mail_id}")
        if self.refused_count:
            parts.append(f"{self.refused_count} refused")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "actor": self.actor,
            "requested": self.requested,
            "done": self.done,
            "refused": self.refused,
            "refused_count": self.refused_count,
            "staff_action_id": self.staff_action_id,
            "new_mail_id": self.new_mail_id,
            "sent": self.sent,
            "failed": self.failed,
            "summary": self.summary(),
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def _clean_ids(ids: Iterable[int | str]) -> list[int]:
    out: list[int] = []
    for raw in ids:
        try:
            if isinstance(raw, str) and not (raw.isascii() and raw.strip().isdigit()):
                raise ValueError(raw)  # "１", "1e3", "0x1", "1_0": not how a mail id is written
            value = int(raw)
        except (TypeError, ValueError):
            raise ActionError(f"ids: {raw!r} is not a mail id") from None
        if not 1 <= value <= MAX_MAIL_ID:
            raise ActionError(f"ids: {str(raw)[:40]!r} is not a mail id (1 … {MAX_MAIL_ID})")
        out.append(value)
    return list(dict.fromkeys(out))  # keep order, drop repeats


def _check_actor(actor: str) -> str:
    actor = (actor or "").strip()
    if not actor:
        raise ActionError("actor: an actor name is required")
    return actor[:100]


def _lock_rows(session: Session, ids: Sequence[int]) -> dict[int, tuple[str, str | None, Any]]:
    rows = session.execute(
        select(Mail.id, Mail.status, Mail.claimed_by, Mail.lease_until)
        .where(Mail.id.in_(ids))
        .with_for_update()
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _vet(
    session: Session, ids: Sequence[int], action: str, now: datetime, result: ActionResult
) -> list[tuple[int, str]]:
    """(id, status) of the mails the action may touch; refusals go into `result`."""
    ok: list[tuple[int, str]] = []
    found = _lock_rows(session, ids)
    for mail_id in ids:
        row = found.get(mail_id)
        if row is None:
            _refuse(result, f"mail {mail_id}: no such mail")
            continue
        status, claimed_by, lease_until = row
        try:
            check_action(mail_id, action, status)
        except TransitionRefused as exc:
            _refuse(result, str(exc))
            continue
        if claimed_by and lease_until is not None and lease_until > now:
            _refuse(
                result,
                f"mail {mail_id}: is being sent right now (claimed by {claimed_by} "
                f"until {lease_until:%Y-%m-%d %H:%M:%S} UTC); try again after that",
            )
            continue
        ok.append((mail_id, status))
    return ok


def _refuse(result: ActionResult, message: str) -> None:
    result.refused_count += 1
    if len(result.refused) < MAX_REFUSALS_KEPT:
        result.refused.append(message)


def _move(
    session: Session,
    vetted: list[tuple[int, str]],
    event: str,
    to_status: str,
    actor: str,
    now: datetime,
    detail: str | None,
) -> None:
    if not vetted:
        return
    values: dict[str, Any] = {}
    if to_status == UNSENT:
        # Due now: a mail put back to unsent is not held back by an old retry time.
        values.update(next_attempt_at=None, claimed_by=None, lease_until=None)
    change_status_many(session, vetted, to_status, event, actor, detail, now, **values)


def _record(
    session: Session, result: ActionResult, now: datetime, extra: dict[str, Any] | None = None
) -> None:
    detail: dict[str, Any] = {
        "ids": result.done,
        "requested": result.requested,
        "refused_count": result.refused_count,
        "refused": result.refused,
    }
    if extra:
        detail.update(extra)
    row = StaffAction(
        at=now, actor=result.actor, action=result.action, count=len(result.done), detail=detail
    )
    session.add(row)
    session.flush()
    result.staff_action_id = row.id


def change_status(
    session: Session,
    action: str,
    ids: Iterable[int | str],
    actor: str,
    *,
    audit: dict[str, Any] | None = None,
) -> ActionResult:
    """cancel | uncancel | delete | release the given mails, in the caller's transaction."""
    if action not in TARGET:
        raise ActionError(f"action: {action!r} is not one of {', '.join(TARGET)}")
    actor = _check_actor(actor)
    id_list = _clean_ids(ids)
    result = ActionResult(action=action, actor=actor, requested=len(id_list))
    now = _now()
    take_write_lock(session)
    for chunk in _chunks(id_list):
        vetted = _vet(session, chunk, action, now, result)
        _move(session, vetted, action, TARGET[action], actor, now, None)
        result.done.extend(i for i, _ in vetted)
    _record(session, result, now, audit)
    return result


def cancel(session: Session, ids: Iterable[int | str], actor: str) -> ActionResult:
    return change_status(session, "cancel", ids, actor)


def uncancel(session: Session, ids: Iterable[int | str], actor: str) -> ActionResult:
    return change_status(session, "uncancel", ids, actor)


def delete(
    session: Session, ids: Iterable[int | str], actor: str, *, audit: dict[str, Any] | None = None
) -> ActionResult:
    """Reviewer pruning: status `deleted`; the row (and its idempotency key) stays."""
    return change_status(session, "delete", ids, actor, audit=audit)


def release(session: Session, ids: Iterable[int | str], actor: str) -> ActionResult:
    """A held mail (over the per-run cap, B7) back to unsent for the next send run."""
    return change_status(session, "release", ids, actor)


def send(
    factory: sessionmaker[Session],
    ids: Iterable[int | str],
    actor: str,
    *,
    action: str = "send",
    smtp: Any = None,
    audit: dict[str, Any] | None = None,
) -> ActionResult:
    """Send (unsent/error/held) or resend (sent/cancelled) now, through `send_now`.

    Step 1 (one transaction): vet each mail for `action`, write a `<action>_requested`
    event per mail and the StaffAction. Step 2: `automail.sending.send_now` claims and
    sends them with the send DAG's batch code (a resend gets a fresh Message-ID there).
    If step 2 fails, every mail keeps a status an operator can see and act on.
    """
    from automail.sending import SendingStopped, send_now
    from automail.sending.smtp import RelayConfigs
    from automail.signing import MissingSecretKey, secret_key

    if action not in SEND_ACTIONS:
        raise ActionError(f"action: {action!r} is not one of {', '.join(SEND_ACTIONS)}")
    actor = _check_actor(actor)
    id_list = _clean_ids(ids)
    result = ActionResult(action=action, actor=actor, requested=len(id_list))
    now = _now()
    stopped = ActionError(
        f"{action}: the mail server is stopped (setting mail_server_stopped is true); "
        "nothing was sent"
    )
    with factory.begin() as session:
        if settings.get(session, "mail_server_stopped"):
            raise stopped
        # Each shop's relay settings are read when its batch goes; one that cannot be
        # read gives its claims back at once and names the relay in the refusals.
        smtp = smtp or RelayConfigs()
        try:  # likewise the signing key every sent mail carries (automail.bounce_links)
            secret_key()
        except MissingSecretKey as exc:
            raise ActionError(f"{action}: {exc}; nothing was sent") from None
        take_write_lock(session)
        for chunk in _chunks(id_list):
            vetted = _vet(session, chunk, action, now, result)
            _note(session, vetted, f"{action}_requested", actor, now)
            result.done.extend(i for i, _ in vetted)
        _record(session, result, now, audit)
    if not result.done:
        return result
    try:
        summary = send_now(factory, result.done, actor, smtp)
    except SendingStopped:
        raise stopped from None
    result.send_summary = summary
    for mail_id, reason in summary.not_claimed.items():
        _refuse(result, reason)
        if mail_id in result.done:
            result.done.remove(mail_id)
    with factory.begin() as session:
        rows = session.execute(select(Mail.id, Mail.status).where(Mail.id.in_(result.done)))
        statuses = dict(rows.all())
        result.sent = [i for i in result.done if statuses.get(i) == "sent"]
        result.failed = [i for i in result.done if statuses.get(i) != "sent"]
        row = session.get(StaffAction, result.staff_action_id)
        if row is not None:  # the audit row also tells how the send went
            row.count = len(result.done)
            row.detail = {
                **(row.detail or {}),
                "ids": result.done,
                "refused": result.refused,
                "refused_count": result.refused_count,
                "sent": result.sent,
                "failed": result.failed,
                "summary": summary.as_dict(),
            }
    return result


def _note(
    session: Session, vetted: list[tuple[int, str]], event: str, actor: str, now: datetime
) -> None:
    """An event without a status change (who asked for a send, and when)."""
    if vetted:
        session.execute(
            insert(MailEvent),
            [
                {"mail_id": i, "at": now, "event": event, "from_status": s, "actor": actor}
                for i, s in vetted
            ],
        )


def copy_mail(session: Session, mail_id: int | str, to_address: str, actor: str) -> Mail:
    """Seed 000 item 15: a new `manual` mail with the past mail's content; only To changes."""
    actor = _check_actor(actor)
    (source_id,) = _clean_ids([mail_id])
    to_address = (to_address or "").strip()
    reason = check_address(to_address)
    if reason:
        raise ActionError(f"to: {reason}")
    source = session.get(Mail, source_id)
    if source is None:
        raise LookupError(f"mail {source_id}: no such mail")
    now = _now()
    copy = Mail(
        shop_id=source.shop_id,
        kind=MANUAL,
        mode=MANUAL,
        source_key=f"copy:{source.id}:{uuid.uuid4().hex}",
        status=UNSENT,
        # The customer link only holds while the address is theirs (bounces update it).
        customer_id=source.customer_id if to_address == source.to_address else None,
        order_id=source.order_id,
        shipment_id=source.shipment_id,
        template_id=source.template_id,
        copied_from_id=source.id,
        device=source.device,
        to_address=to_address,
        from_address=source.from_address,
        from_name=source.from_name,
        reply_to=source.reply_to,
        bcc=source.bcc,
        return_path=source.return_path,
        subject=source.subject,
        body_text=source.body_text,
        body_html=source.body_html,
        extra_headers=dict(source.extra_headers) if source.extra_headers else None,
        created_at=now,
        updated_at=now,
        rendered_at=source.rendered_at,
        created_by=actor,
    )
    session.add(copy)
    session.flush()
    session.add_all(
        [
            MailEvent(
                mail_id=copy.id,
                at=now,
                event="created",
                to_status=UNSENT,
                actor=actor,
                detail=f"copy of mail {source.id} to {to_address}",
            ),
            MailEvent(
                mail_id=source.id,
                at=now,
                event="copied",
                actor=actor,
                detail=f"copied to new mail {copy.id} ({to_address})",
            ),
            StaffAction(
                at=now,
                actor=actor,
                action="copy",
                count=1,
                detail={"ids": [copy.id], "source": source.id, "to": to_address},
            ),
        ]
    )
    session.flush()
    return copy


def copy_and_send(
    factory: sessionmaker[Session],
    mail_id: int | str,
    to_address: str,
    actor: str,
    *,
    send_it: bool = True,
    smtp: Any = None,
) -> ActionResult:
    """Copy (saved in its own transaction, so it survives a send failure), then send."""
    with factory.begin() as session:
        copy_id = copy_mail(session, mail_id, to_address, actor).id
    if not send_it:
        result = ActionResult(action="copy", actor=actor, requested=1, done=[copy_id])
        result.new_mail_id = copy_id
        return result
    try:
        result = send(factory, [copy_id], actor, smtp=smtp, audit={"copy_of": int(mail_id)})
    except ActionError as exc:  # e.g. mail server stopped: say both what was kept and why
        raise CopySavedNotSent(copy_id, str(exc)) from None
    result.new_mail_id = copy_id
    return result


def allowed_actions(status: str) -> list[str]:
    return [a for a, froms in ACTION_FROM.items() if status in froms]
