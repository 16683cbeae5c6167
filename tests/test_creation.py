"""Transactional creation: lookback boundaries, idempotency, backfill, gaps, modes (A1–A3, B6, F1)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from automail import settings
from automail.creation import create_transactional, set_kind
from automail.db import session_factory
from automail.models import Mail, ShopMailKind, Template
from automail.rendering import install_default_templates
from automail.sample_data import make_customer, make_order, make_shipment, make_shop

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # the moment ops switch a kind on
HOUR = timedelta(hours=1)


def _keys(session: Session, kind: str | None = None) -> set[tuple[str, str]]:
    q = select(Mail.kind, Mail.source_key)
    if kind:
        q = q.where(Mail.kind == kind)
    return {(k, s) for k, s in session.execute(q)}


@pytest.fixture
def shop(session: Session):
    install_default_templates(session)
    return make_shop(session)


def _order_at(session: Session, shop, when: datetime, email: str = "hanako@example.jp"):
    customer = make_customer(session, shop, email=email)
    return make_order(session, customer, when, number=f"N{when:%m%d%H%M}-{customer.id}")


def test_order_confirmation_lookback_is_one_week_from_switch_on(session, shop) -> None:
    inside = _order_at(session, shop, T - timedelta(days=6, hours=23))
    outside = _order_at(session, shop, T - timedelta(days=7, hours=1))
    in_interval = _order_at(session, shop, T + timedelta(minutes=30))
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    report = create_transactional(session, T, T + HOUR, now=T + HOUR)
    assert _keys(session) == {
        ("order_confirmation", f"order:{inside.id}"),
        ("order_confirmation", f"order:{in_interval.id}"),
    }
    assert f"order:{outside.id}" not in {k for _, k in _keys(session)}
    assert report.created == {"tea/order_confirmation": 2}
    mail = session.scalar(select(Mail).where(Mail.source_key == f"order:{inside.id}"))
    assert mail.status == "unsent" and mail.mode == "auto"
    assert mail.to_address == "hanako@example.jp" and mail.from_address == shop.from_address
    assert inside.order_number in (mail.body_text or mail.body_html or "") + mail.subject
    assert mail.rendered_at is not None and mail.template_id is not None


def test_shipping_notice_lookback_counts_from_shipment_confirmation(session, shop) -> None:
    # The order is old; the shipment date decides.
    old_order = _order_at(session, shop, T - timedelta(days=30))
    inside = make_shipment(session, old_order, T - timedelta(days=6, hours=23))
    other = _order_at(session, shop, T - timedelta(days=20), email="taro@example.jp")
    outside = make_shipment(session, other, T - timedelta(days=7, hours=1))
    set_kind(session, shop, "shipping_notice", True, now=T)
    session.commit()
    create_transactional(session, T, T + HOUR, now=T + HOUR)
    assert _keys(session) == {("shipping_notice", f"shipment:{inside.id}")}
    assert outside.id != inside.id


def test_follow_up_covers_three_months_and_is_created_when_due(session, shop) -> None:
    settings.put(session, "follow_up_delay_minutes", 7 * 24 * 60)
    o1 = _order_at(session, shop, T - timedelta(days=95))
    within = make_shipment(session, o1, T - timedelta(days=91))
    o2 = _order_at(session, shop, T - timedelta(days=100), email="b@example.jp")
    beyond = make_shipment(session, o2, T - timedelta(days=93))
    o3 = _order_at(session, shop, T - timedelta(days=3), email="c@example.jp")
    recent = make_shipment(session, o3, T - timedelta(days=2))  # due at T + 5 days
    set_kind(session, shop, "follow_up", True, now=T)
    session.commit()
    create_transactional(session, T, T + HOUR, now=T + HOUR)
    assert _keys(session) == {("follow_up", f"shipment:{within.id}")}
    assert beyond.id not in (within.id, recent.id)
    # Hourly runs until the recent shipment's follow-up falls due.
    due = recent.confirmed_at + timedelta(days=7)
    start = due.replace(minute=0)
    create_transactional(session, start - HOUR, start, now=start)
    assert ("follow_up", f"shipment:{recent.id}") not in _keys(session)
    create_transactional(session, start, start + HOUR, now=start + HOUR)
    assert ("follow_up", f"shipment:{recent.id}") in _keys(session)
    mail = session.scalar(select(Mail).where(Mail.source_key == f"shipment:{recent.id}"))
    assert mail.due_at == due


def test_rerun_and_overlapping_runs_create_nothing_twice(session, shop) -> None:
    for i in range(30):
        _order_at(session, shop, T + timedelta(minutes=i), email=f"u{i}@example.jp")
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    first = create_transactional(session, T, T + HOUR, now=T + HOUR)
    again = create_transactional(session, T, T + HOUR, now=T + HOUR)
    wider = create_transactional(session, T - HOUR, T + 2 * HOUR, now=T + 2 * HOUR)
    assert first.total == 30 and again.total == 0 and wider.total == 0
    assert session.scalar(select(func.count()).select_from(Mail)) == 30


def test_two_concurrent_runs_never_duplicate(engine: Engine, session, shop) -> None:
    for i in range(200):
        _order_at(session, shop, T + timedelta(seconds=10 * i), email=f"c{i}@example.jp")
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    settings.put(session, "creation_chunk_size", 25)  # many small chunks interleave
    session.commit()
    errors: list[BaseException] = []

    def run() -> None:
        s = session_factory(engine)()
        try:
            create_transactional(s, T, T + HOUR, now=T + HOUR)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = session.scalar(select(func.count()).select_from(Mail))
    distinct = session.scalar(select(func.count(func.distinct(Mail.source_key))))
    assert total == distinct == 200


def test_backfill_over_a_range_equals_one_run_over_the_union(session, shop) -> None:
    for i in range(40):
        o = _order_at(
            session, shop, T - timedelta(days=3) + timedelta(hours=2 * i), email=f"b{i}@example.jp"
        )
        make_shipment(session, o, o.ordered_at + timedelta(hours=5))
    for kind in ("order_confirmation", "shipping_notice", "follow_up"):
        set_kind(session, shop, kind, True, now=T)
    session.commit()
    start, end = T, T + timedelta(hours=12)
    hours = [start + k * HOUR for k in range(12)]
    for h in hours:  # what `airflow backfill create` runs, one interval at a time
        create_transactional(session, h, h + HOUR, now=end)
    create_transactional(session, hours[3], hours[3] + HOUR, now=end)  # a rerun inside
    backfilled = _keys(session)

    session.execute(Mail.__table__.delete())
    session.execute(update(ShopMailKind).values(covered_until=None, lookback_done_at=None))
    session.commit()
    create_transactional(session, start, end, now=end)
    assert _keys(session) == backfilled
    assert len(backfilled) > 40


def test_a_paused_dag_loses_nothing_when_it_resumes(session, shop) -> None:
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    create_transactional(session, T, T + HOUR, now=T + HOUR)
    during_pause = _order_at(session, shop, T + 3 * HOUR)
    session.commit()
    resume = T + 10 * HOUR  # catchup is off: the next run is just the latest interval
    create_transactional(session, resume, resume + HOUR, now=resume + HOUR)
    assert ("order_confirmation", f"order:{during_pause.id}") in _keys(session)


def test_manual_mode_and_switches(session, shop) -> None:
    o = _order_at(session, shop, T + timedelta(minutes=5))
    make_shipment(session, o, T + timedelta(minutes=30))
    set_kind(session, shop, "order_confirmation", True, mode="manual", now=T)
    set_kind(session, shop, "shipping_notice", False, now=T)  # off: nothing created
    session.commit()
    create_transactional(session, T, T + HOUR, now=T + HOUR)
    mails = session.scalars(select(Mail)).all()
    assert [(m.kind, m.mode, m.status) for m in mails] == [
        ("order_confirmation", "manual", "unsent")
    ]
    with pytest.raises(ValueError, match="kind: 'newsletter'"):
        set_kind(session, shop, "newsletter", True)


def test_deleted_mail_is_not_recreated(session, shop) -> None:
    o = _order_at(session, shop, T + timedelta(minutes=5))
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    create_transactional(session, T, T + HOUR, now=T + HOUR)
    session.execute(update(Mail).values(status="deleted"))
    session.commit()
    report = create_transactional(session, T - HOUR, T + 2 * HOUR, now=T + 2 * HOUR)
    assert report.total == 0
    assert (
        session.scalar(select(Mail.status).where(Mail.source_key == f"order:{o.id}")) == "deleted"
    )


def test_missing_template_holds_the_mail_with_a_reason(session, shop) -> None:
    session.execute(Template.__table__.delete())
    o = _order_at(session, shop, T + timedelta(minutes=5))
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    report = create_transactional(session, T, T + HOUR, now=T + HOUR)
    mail = session.scalar(select(Mail).where(Mail.source_key == f"order:{o.id}"))
    assert report.held == {"tea/order_confirmation": 1}
    assert mail.status == "held"
    assert mail.last_error.startswith("render failed:") and "order_confirmation" in mail.last_error


def test_bad_interval_is_refused(session) -> None:
    with pytest.raises(ValueError, match="must be before"):
        create_transactional(session, T, T)
    with pytest.raises(ValueError, match="timezone-aware"):
        create_transactional(session, T.replace(tzinfo=None), T.replace(tzinfo=None) + HOUR)


def test_sources_skip_orders_that_have_their_mail_before_rendering(session, shop) -> None:
    # Reruns and overlapping windows must not re-render: the stream leaves out every
    # order whose mail exists, across keyset chunks (chunk of 7 over 30 orders).
    from automail.creation.sources import stream_sources

    for i in range(30):
        _order_at(session, shop, T + timedelta(minutes=i), email=f"s{i}@example.jp")
    set_kind(session, shop, "order_confirmation", True, now=T)
    session.commit()
    create_transactional(session, T, T + timedelta(minutes=10), now=T + HOUR)
    assert len(_keys(session)) == 10

    def streamed() -> list[str]:
        chunks = stream_sources(session, shop.id, "order_confirmation", T, T + HOUR, 7)
        return [row.source_key for chunk in chunks for row in chunk]

    rest = streamed()
    assert len(rest) == 20 and not {("order_confirmation", k) for k in rest} & _keys(session)
    create_transactional(session, T, T + HOUR, now=T + HOUR)
    assert streamed() == []


def test_partitions_split_a_window_without_gap_or_overlap(session, shop) -> None:
    # The DAG's mapped create_partition tasks: 3 partitions over one window, small
    # chunks so the split crosses keyset pages, equal one unpartitioned run.
    from automail.creation.create import finish, plan, run_job

    for i in range(40):
        _order_at(session, shop, T + timedelta(minutes=i), email=f"p{i}@example.jp")
    set_kind(session, shop, "order_confirmation", True, now=T)
    settings.put(session, "creation_chunk_size", 6)
    session.commit()
    jobs = plan(session, T, T + HOUR)
    session.commit()
    per_partition = [
        run_job(session, jobs[0], "test", now=T + HOUR, partition=p, partitions=3).total
        for p in range(3)
    ]
    finish(session, jobs, T + HOUR, T + HOUR)
    assert sorted(per_partition) == [13, 13, 14]  # ids 1..40 split by id % 3
    assert len(_keys(session, "order_confirmation")) == 40


def test_bulk_insert_skips_keys_that_exist_and_keeps_the_rest(session, shop) -> None:
    # PostgreSQL COPYs straight into mails and falls back to staging + ON CONFLICT when
    # a concurrent run got a key in first; SQLite uses INSERT OR IGNORE. Same result.
    from automail.creation.bulk_insert import COLUMNS, insert_ignoring_duplicates

    def row(key: str, subject: str) -> tuple:
        values = dict.fromkeys(COLUMNS)
        values.update(
            shop_id=shop.id, kind="order_confirmation", source_key=key, mode="auto",
            status="unsent", device="pc", to_address="a@example.jp",
            from_address=shop.from_address, subject=subject, body_text="本文\n\tタブ\\",
            created_at=T, updated_at=T, attempt_count=0,
        )  # fmt: skip
        return tuple(values[c] for c in COLUMNS)

    assert insert_ignoring_duplicates(session, [row("order:1", "first")]) == 1
    session.commit()
    new = insert_ignoring_duplicates(session, [row("order:2", "x"), row("order:1", "again")])
    session.commit()
    assert new == 1
    subjects = dict(session.execute(select(Mail.source_key, Mail.subject)).all())
    assert subjects == {"order:1": "first", "order:2": "x"}
    assert session.scalar(select(Mail.body_text).where(Mail.source_key == "order:2")) == (
        "本文\n\tタブ\\"
    )
