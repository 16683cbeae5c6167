"""Creating the step mails that are due (D1, D2), idempotently and backfill-safe.

For a run covering up to `until` (the DAG run's data interval end), a step is due
for a customer when start_event + offset <= until. It is created once per
(step, customer) — source_key `step:{step_id}:customer:{customer_id}` under the
unique (shop, kind, source_key) key, or once per start (`…:start:{event id}`) when the
sequence allows restarts (start events: automail.steps.events) — and only if the customer is, at run time,
eligible (C4: opted in, valid, not cleaned, not unsubscribed) and still matches
the sequence's filter (D2). A run for an old interval (backfill) therefore creates
exactly the mails due by then that no earlier run created; reruns create nothing.
The mail's `due_at`/`next_attempt_at` are the exact due minute (start + offset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import String, cast, exists, func, literal, select
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.audience import eligible_clause, filter_clauses
from automail.campaigns.content import CompiledContent
from automail.campaigns.mailing import CHUNK, MarketingMailer, insert_ignoring_duplicates
from automail.models import Customer, Mail, Shop, StepSequence, StepSequenceStep
from automail.states import STEP
from automail.steps.events import start_events
from automail.tracking.links import tracker_for


def source_key(step_id: int, customer_id: int, start: int | None = None) -> str:
    key = f"step:{step_id}:customer:{customer_id}"
    return f"{key}:start:{start}" if start else key


@dataclass
class StepReport:
    created: int = 0
    by_step: dict[int, int] = field(default_factory=dict)


def due_query(seq: StepSequence, step: StepSequenceStep, until: datetime, tz: str):  # noqa: ANN201
    """SELECT recipients (+ their start time and start ref) for whom `step` is due by `until`."""
    starts = start_events(seq)
    clauses, needs_stats, stats = filter_clauses(seq.audience_filter or {}, tz)
    key = literal(f"step:{step.id}:customer:") + cast(Customer.id, String)
    key = key + func.coalesce(literal(":start:") + cast(starts.c.ref, String), "")
    already = exists(
        select(Mail.id).where(
            Mail.shop_id == seq.shop_id, Mail.kind == STEP, Mail.source_key == key
        )
    )
    start = starts.c.at
    query = (
        select(
            Customer.id,
            Customer.name,
            Customer.email,
            Customer.prefecture,
            Customer.coupon_code,
            start.label("start_at"),
            starts.c.ref.label("start_ref"),
        )
        .join(starts, starts.c.customer_id == Customer.id)
        .where(
            Customer.shop_id == seq.shop_id,
            eligible_clause(),
            *clauses,
            start <= until - timedelta(minutes=step.offset_minutes),
            ~already,
        )
    )
    if seq.starts_from is not None:
        query = query.where(start >= seq.starts_from)
    if needs_stats:
        query = query.outerjoin(stats, stats.c.customer_id == Customer.id)
    return query.order_by(Customer.id, start)


def create_due_step_mails(
    session: Session,
    until: datetime,
    now: datetime | None = None,
    sequence_ids: list[int] | None = None,
) -> StepReport:
    now = now or datetime.now(UTC)
    tz = settings.get(session, "campaign_timezone")
    report = StepReport()
    query = select(StepSequence).where(StepSequence.active.is_(True)).order_by(StepSequence.id)
    if sequence_ids:
        query = query.where(StepSequence.id.in_(sequence_ids))
    for seq in session.scalars(query).all():
        shop = session.get_one(Shop, seq.shop_id)
        for step in seq.steps:
            fmt, body = (
                ("html", step.body_html) if step.body_html else ("text", step.body_text or "")
            )
            tracker = tracker_for(session, "step", step.id, body, fmt, seq)
            source = tracker.template if tracker else body
            mailer = MarketingMailer(
                session, shop, CompiledContent(step.subject, source, fmt), tracker
            )
            result = session.execute(
                due_query(seq, step, until, tz), execution_options={"yield_per": CHUNK}
            )
            made = 0
            for part in result.partitions(CHUNK):
                rows = []
                for c in part:
                    start = c.start_at
                    if isinstance(start, str):  # SQLite: min() over a text timestamp
                        start = datetime.fromisoformat(start)
                    if start.tzinfo is None:  # SQLite returns naive UTC from subqueries
                        start = start.replace(tzinfo=UTC)
                    due = start + timedelta(minutes=step.offset_minutes)
                    rows.append(
                        mailer.row(
                            c,
                            kind=STEP,
                            source_key=source_key(step.id, c.id, c.start_ref),
                            now=now,
                            due_at=due,
                            next_attempt_at=due,
                        )
                    )
                made += insert_ignoring_duplicates(session, rows)
            report.by_step[step.id] = made
            report.created += made
    session.flush()
    return report
