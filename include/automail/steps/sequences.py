"""Step-mail sequences (D1): a start event, a customer filter and offset steps."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automail.campaigns.audience import validate_filter
from automail.campaigns.content import CompiledContent
from automail.models import Shop, StepSequence, StepSequenceStep, TrackingLink
from automail.steps.events import check_start

_OFFSET = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*$", re.IGNORECASE)


def parse_offset(text: str | int) -> int:
    """'3d', '2h30m', '1d2h', '45m' or plain minutes -> minutes (seed 002: 日 時間 分後)."""
    if isinstance(text, int) and not isinstance(text, bool):
        minutes = text
    else:
        m = _OFFSET.match(str(text))
        if not m or not any(m.groups()):
            raise ValueError(f"offset: {text!r} is not like '3d', '2h30m' or '45m'")
        d, h, mi = (int(g or 0) for g in m.groups())
        minutes = d * 1440 + h * 60 + mi
    if minutes < 0:
        raise ValueError(f"offset: {text!r} is negative")
    return minutes


def create_sequence(
    session: Session,
    *,
    shop_id: int,
    name: str,
    start_event: str,
    audience_filter: dict | None = None,
    starts_from: datetime | None = None,
    now: datetime | None = None,
    start_link_id: int | None = None,
    allow_restart: bool = False,
    track_opens: bool = False,
    track_clicks: bool = False,
    track_text_links: bool = False,
) -> StepSequence:
    """A new sequence; only start events at/after `starts_from` (default: now) count."""
    if session.get(Shop, shop_id) is None:
        raise LookupError(f"shop_id: no shop {shop_id}")
    if not name or not name.strip():
        raise ValueError(f"name: required, got {name!r}")
    check_start(start_event, start_link_id, allow_restart)
    if start_link_id is not None and session.get(TrackingLink, start_link_id) is None:
        raise LookupError(f"start_link_id: no tracked link {start_link_id}")
    if starts_from is not None and starts_from.tzinfo is None:
        raise ValueError(f"starts_from: {starts_from.isoformat()} has no time zone")
    seq = StepSequence(
        shop_id=shop_id,
        name=name.strip(),
        start_event=start_event,
        audience_filter=validate_filter(audience_filter),
        active=True,
        starts_from=starts_from or now or datetime.now(UTC),
        start_link_id=start_link_id,
        allow_restart=bool(allow_restart),
        track_opens=bool(track_opens),
        track_clicks=bool(track_clicks),
        track_text_links=bool(track_text_links),
    )
    session.add(seq)
    session.flush()
    return seq


def add_step(
    session: Session,
    sequence_id: int,
    *,
    offset: str | int,
    subject: str,
    body_text: str | None = None,
    body_html: str | None = None,
) -> StepSequenceStep:
    seq = session.get(StepSequence, sequence_id)
    if seq is None:
        raise LookupError(f"sequence_id: no step sequence {sequence_id}")
    minutes = parse_offset(offset)
    if not subject or not subject.strip():
        raise ValueError(f"subject: required, got {subject!r}")
    if not (body_text or body_html):
        raise ValueError("body: one of body_text or body_html is required")
    if body_html:
        CompiledContent(subject, body_html, "html")
    else:
        CompiledContent(subject, body_text or "", "text")
    position = (
        session.scalar(
            select(func.max(StepSequenceStep.position)).where(
                StepSequenceStep.sequence_id == sequence_id
            )
        )
        or 0
    ) + 1
    step = StepSequenceStep(
        sequence_id=sequence_id,
        position=position,
        offset_minutes=minutes,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
    )
    session.add(step)
    session.flush()
    return step
