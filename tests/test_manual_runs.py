"""A run without a data interval (▷ Trigger, `airflow dags trigger`, an asset event):
what it covers (windows.run_interval). The real triggers of every DAG run in
tests/faults/test_cluster.py with a real scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from automail import settings
from automail.creation import create_transactional, set_kind
from automail.creation.create import plan
from automail.creation.windows import run_interval
from automail.models import Mail, ShopMailKind
from automail.rendering import install_default_templates
from automail.sample_data import make_customer, make_order, make_shop

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_run_interval_keeps_a_data_interval_and_makes_a_manual_run_end_now() -> None:
    assert run_interval(T, T + HOUR, now=T + 5 * HOUR) == (T, T + HOUR)
    assert run_interval(None, None, now=T) == (None, T)
    start, end = run_interval(None, None)
    assert start is None and end.tzinfo is not None
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=1)


def test_manual_run_covers_from_where_coverage_stopped_to_now(session) -> None:
    install_default_templates(session)
    shop = make_shop(session)
    c = make_customer(session, shop, email="manual@example.jp")
    old = make_order(session, c, T - timedelta(days=3), number="M-OLD")
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    # First run by hand, no data interval: the kind's lookback up to now.
    create_transactional(session, *run_interval(None, None, now=T + HOUR), now=T + HOUR)
    smk = session.scalar(select(ShopMailKind))
    assert smk.covered_until == T + HOUR
    # Orders after the last covered time — two days of scheduler pause — and one not
    # yet placed at the manual run's "now".
    gap = make_order(session, c, T + 2 * HOUR + timedelta(days=2), number="M-GAP")
    future = make_order(session, c, T + timedelta(days=5), number="M-FUTURE")
    session.commit()
    now = T + timedelta(days=3)
    create_transactional(session, *run_interval(None, None, now=now), now=now)
    keys = set(session.scalars(select(Mail.source_key)))
    assert keys == {f"order:{old.id}", f"order:{gap.id}"}, "gap covered, nothing twice"
    assert f"order:{future.id}" not in keys
    session.refresh(smk)
    assert smk.covered_until == now
    # The window reaches back to coverage minus the late-import overlap, not further.
    overlap = timedelta(minutes=settings.get(session, "creation_overlap_minutes"))
    (job,) = plan(session, None, now + HOUR)
    assert datetime.fromisoformat(job.lower) == now - overlap
    assert datetime.fromisoformat(job.upper) == now + HOUR


def test_manual_run_end_must_be_timezone_aware(session) -> None:
    with pytest.raises(ValueError, match="end must be timezone-aware"):
        plan(session, None, T.replace(tzinfo=None))
