"""Which events one creation run covers (A2, A3, F1).

A run for the data interval [start, end) covers events with time < end and
  - on the first run after a kind is switched on: back to the lookback window,
    counted from the switch-on time (order confirmation 1 week by order date,
    shipping notice 1 week and follow-up 3 months by shipment confirmation);
  - after a gap (the DAG was paused, catchup is off): back to where coverage stopped,
    so a pause never loses mails;
  - otherwise from `start`;
  always widened by `creation_overlap_minutes` (default 1 day) so orders imported late
  into the store (mall imports lag) still get their mail.
Events older than (switch-on - lookback) never get a mail: the kind was off then.
Follow-up's event time is its due time, shipment confirmation + the follow-up delay.
Creation is idempotent, so overlapping windows (reruns, backfills) are harmless.

A run without a data interval (triggered by hand, or by the import's asset event)
covers from the earliest `covered_until` of the switched-on kinds to now: see
`run_interval`, the one place that decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from automail import settings
from automail.models import ShopMailKind
from automail.states import FOLLOW_UP


@dataclass(frozen=True)
class Window:
    """Bounds on the *source* time column (ordered_at or confirmed_at): [lower, upper)."""

    lower: datetime
    upper: datetime
    first_run: bool


def lookback(session: Session, kind: str) -> timedelta:
    return timedelta(minutes=settings.get(session, f"lookback_{kind}_minutes"))


def follow_up_delay(session: Session) -> timedelta:
    return timedelta(minutes=settings.get(session, "follow_up_delay_minutes"))


def run_interval(
    session: Session, start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The [start, end) a creation run covers.

    A scheduled or backfill run: its data interval, exactly. A run without one (manual
    trigger, or an asset event after an import): from the last covered time (the
    earliest `covered_until` of the switched-on kinds) to `now`, so orders imported
    since the last run get their mails now rather than at the next hour; each kind's
    window still starts at its own coverage minus the overlap (`window_for`).
    """
    if start is not None and end is not None:
        return start, end
    from automail.creation.switches import enabled_kinds

    covered = [smk.covered_until for _, smk in enabled_kinds(session) if smk.covered_until]
    start = min(covered, default=now - timedelta(hours=1))
    # Already covered up to now (a run a moment ago): still a valid, tiny interval.
    return min(start, now - timedelta(seconds=1)), now


def window_for(session: Session, smk: ShopMailKind, start: datetime, end: datetime) -> Window:
    if smk.enabled_at is None:
        raise ValueError(f"shop {smk.shop_id} kind {smk.kind}: enabled without enabled_at")
    earliest = smk.enabled_at - lookback(session, smk.kind)
    # Follow-up events are due times; shift back to shipment confirmation times.
    shift = follow_up_delay(session) if smk.kind == FOLLOW_UP else timedelta(0)
    first_run = smk.covered_until is None
    if first_run:
        lower = earliest
    else:
        overlap = timedelta(minutes=settings.get(session, "creation_overlap_minutes"))
        lower = max(min(start, smk.covered_until) - overlap - shift, earliest)
    return Window(lower=lower, upper=end - shift, first_run=first_run)


def mark_covered(smk: ShopMailKind, end: datetime, now: datetime) -> None:
    """Every run covers back to `covered_until`, so coverage is contiguous up to `end`."""
    if smk.covered_until is None:
        smk.lookback_done_at = now
    if smk.covered_until is None or smk.covered_until < end:
        smk.covered_until = end
