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
A run without a data interval (▷ Trigger in the UI, `airflow dags trigger`, a run
started by an asset event) has no [start, end) of its own: it covers up to now, from
where each kind's coverage stopped (or its lookback on a first run) — see run_interval.
Events older than (switch-on - lookback) never get a mail: the kind was off then.
Follow-up's event time is its due time, shipment confirmation + the follow-up delay.
Creation is idempotent, so overlapping windows (reruns, backfills) are harmless.

A run without a data interval (triggered by hand, or by the import's asset event)
covers from the earliest `covered_until` of the switched-on kinds to now: see
`run_interval`, the one place that decides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    start: datetime | None, end: datetime | None, now: datetime | None = None
) -> tuple[datetime | None, datetime]:
    """What a DAG run covers: its data interval, or, for a run without one (manual
    trigger, asset event), (None, now): up to now, from where coverage stopped."""
    if end is None:
        return None, now or datetime.now(UTC)
    return start, end


def window_for(
    session: Session, smk: ShopMailKind, start: datetime | None, end: datetime
) -> Window:
    if smk.enabled_at is None:
        raise ValueError(f"shop {smk.shop_id} kind {smk.kind}: enabled without enabled_at")
    earliest = smk.enabled_at - lookback(session, smk.kind)
    # Follow-up events are due times; shift back to shipment confirmation times.
    shift = follow_up_delay(session) if smk.kind == FOLLOW_UP else timedelta(0)
    covered = smk.covered_until
    first_run = covered is None
    if covered is None:
        lower = earliest
    else:
        overlap = timedelta(minutes=settings.get(session, "creation_overlap_minutes"))
        since = covered if start is None else min(start, covered)
        lower = max(since - overlap - shift, earliest)
    return Window(lower=lower, upper=end - shift, first_run=first_run)


def mark_covered(smk: ShopMailKind, end: datetime, now: datetime) -> None:
    """Every run covers back to `covered_until`, so coverage is contiguous up to `end`."""
    if smk.covered_until is None:
        smk.lookback_done_at = now
    if smk.covered_until is None or smk.covered_until < end:
        smk.covered_until = end
