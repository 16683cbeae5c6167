"""The newsletter status machine (C5–C9), driven by the `automail_campaigns` DAG.

    scheduled ──(lock window: scheduled_at − campaign_cancel_lock_minutes)──▶ preparing
    preparing ──(scheduled_at reached; audience evaluated, mails rendered)──▶ sending
                └─(nobody to send to)──▶ failed
    sending ──(error rate > campaign_stop_error_rate after campaign_stop_min_sends tries)──▶ stopped
            └─(no unsent/held mail left)──▶ sent ──▶ counting ──(all results final)──▶ counted
    scheduled ──(staff, before the lock)──▶ cancelled

While `sending`, each tick gates the campaign's unsent mails: outside the category's
allowed hours (C8) they are pushed to the next opening; inside, mails are released
(`due_at` = release time, `next_attempt_at` = now) up to the shop's monthly quota
(C9); the rest stay unsent with `last_error` naming the quota and wait for the next
month. Sending itself is the shared claim/send/retry machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns import audience, quota
from automail.campaigns.content import CompiledContent, content_hash
from automail.campaigns.events import transition
from automail.campaigns.hours import window_for
from automail.campaigns.mailing import MarketingMailer, create_mails
from automail.campaigns.unsubscribe_spool import apply_pending as apply_spooled_unsubscribes
from automail.db import rowcount, take_write_lock
from automail.models import Campaign, CampaignCategory, Mail, Shop, Template
from automail.sending.status import change_status_many
from automail.states import CAMPAIGN, CANCELLED, ERROR, HELD, SENT, UNSENT
from automail.tracking.links import tracker_for

ACTIVE = ("scheduled", "preparing", "sending", "sent", "counting")
RECOUNT_DAYS = 7  # late bounces (DSNs) keep changing the counts for about a week
QUOTA_PREFIX = "monthly quota"
HOURS_PREFIX = "outside allowed hours"


def source_key(campaign_id: int, customer_id: int) -> str:
    return f"campaign:{campaign_id}:customer:{customer_id}"


@dataclass
class Counts:
    targets: int = 0
    succeeded: int = 0
    errors: int = 0
    unsent: int = 0
    pending: int = 0  # unsent or held mails (not final yet)
    tried: int = 0
    failing: int = 0  # errors + mails waiting for a retry


@dataclass
class TickReport:
    transitions: list[tuple[int, str, str]] = field(default_factory=list)
    created: int = 0
    released: int = 0
    held_for_quota: int = 0
    held_for_hours: int = 0

    def as_dict(self) -> dict:
        return {
            "transitions": [list(t) for t in self.transitions],
            "created": self.created,
            "released": self.released,
            "held_for_quota": self.held_for_quota,
            "held_for_hours": self.held_for_hours,
        }


def _campaign_mails(campaign_id: int):  # noqa: ANN202
    return and_(
        Mail.campaign_id == campaign_id,
        Mail.kind == CAMPAIGN,
        Mail.source_key.like(f"campaign:{campaign_id}:%"),
    )


def compute_counts(session: Session, campaign: Campaign) -> Counts:
    """Counts from the mails (the sending machinery keeps a mail awaiting a retry in
    status error with next_attempt_at set; it is an error only once that is cleared)."""
    bounced = Mail.bounce_outcome.is_not(None)
    retrying = and_(Mail.status == ERROR, Mail.next_attempt_at.is_not(None))
    ok = and_(Mail.status == SENT, ~bounced)
    final_err = or_(
        and_(Mail.status == ERROR, Mail.next_attempt_at.is_(None)),
        and_(Mail.status == SENT, bounced),
    )

    def n(cond):  # noqa: ANN001, ANN202
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    row = session.execute(
        select(
            func.count(Mail.id),
            n(ok),
            n(final_err),
            n(or_(Mail.status.in_((UNSENT, HELD)), retrying)),
            n(or_(Mail.attempt_count > 0, Mail.status.in_((SENT, ERROR)))),
            n(or_(final_err, retrying)),
        ).where(_campaign_mails(campaign.id))
    ).one()
    targets, succeeded, errors, pending, tried, failing = (int(v) for v in row)
    return Counts(targets, succeeded, errors, targets - succeeded - errors, pending, tried, failing)


def store_counts(campaign: Campaign, counts: Counts) -> None:
    campaign.targets = counts.targets
    campaign.succeeded = counts.succeeded
    campaign.errors = counts.errors
    campaign.unsent = counts.unsent


def _content(session: Session, campaign: Campaign) -> tuple[str, str, str]:
    """C5: content as it is at send time — the linked template's, else the campaign's."""
    if campaign.template_id is not None:
        tpl = session.get(Template, campaign.template_id)
        if tpl is not None:
            if campaign.body_format == "html" and tpl.body_html:
                return tpl.subject, tpl.body_html, "html"
            if tpl.body_text:
                return tpl.subject, tpl.body_text, "text"
    return campaign.subject, campaign.body, campaign.body_format


def start_sending(session: Session, campaign: Campaign, now: datetime, report: TickReport) -> None:
    subject, body, fmt = _content(session, campaign)
    campaign.content_hash = content_hash(fmt, subject, body, campaign.signature)
    session.flush()
    tz = settings.get(session, "campaign_timezone")
    ids = audience.campaign_audience(session, campaign, tz)
    shop = session.get_one(Shop, campaign.shop_id)
    tracker = tracker_for(session, "campaign", campaign.id, body, fmt, campaign)
    compiled = CompiledContent(
        subject, tracker.template if tracker else body, fmt, campaign.signature
    )
    mailer = MarketingMailer(session, shop, compiled, tracker)
    # Created unreleased (due_at NULL): the send claim skips a newsletter mail until the
    # gate below releases it inside the allowed hours and the quota.
    created = create_mails(
        session,
        mailer,
        ids,
        kind=CAMPAIGN,
        source_key=lambda cid: source_key(campaign.id, cid),
        now=now,
        campaign_id=campaign.id,
        template_id=campaign.template_id,
        last_error="waiting for release by the campaign DAG (allowed hours, quota)",
    )
    report.created += created
    counts = compute_counts(session, campaign)
    store_counts(campaign, counts)
    if counts.targets == 0:
        transition(
            session,
            campaign,
            "failed",
            f"no recipients: the audience was empty at {now.isoformat()} "
            f"({campaign.audience_mode} mode, after eligibility and dedupe)",
            now,
        )
        return
    campaign.started_at = now
    transition(session, campaign, "sending", f"sending to {counts.targets} recipients", now)


def stop_campaign(session: Session, campaign: Campaign, counts: Counts, now: datetime) -> None:
    rate = counts.failing / counts.tried
    limit = settings.get(session, "campaign_stop_error_rate")
    reason = (
        f"stopped: error rate {rate:.1%} ({counts.failing}/{counts.tried} tried) above "
        f"campaign_stop_error_rate {limit:.1%}; remaining mails cancelled, never restarted"
    )
    free = or_(Mail.claimed_by.is_(None), Mail.lease_until.is_(None), Mail.lease_until < now)
    mine = and_(_campaign_mails(campaign.id), free)
    # Not yet tried → cancelled; waiting for a retry → no retry (stays error).
    victims = select(Mail.id, Mail.status).where(
        mine,
        or_(
            Mail.status.in_((UNSENT, HELD)),
            and_(Mail.status == ERROR, Mail.next_attempt_at.is_not(None)),
        ),
    )
    rows = session.execute(victims).all()
    cancel = [(i, st) for i, st in rows if st in (UNSENT, HELD)]
    no_retry = [(i, st) for i, st in rows if st == ERROR]
    change_status_many(
        session, cancel, CANCELLED, "campaign_stopped", "system", reason, now,
        last_error=reason, next_attempt_at=None,
    )  # fmt: skip
    change_status_many(
        session, no_retry, ERROR, "campaign_stopped", "system", reason, now, next_attempt_at=None
    )
    session.flush()
    store_counts(campaign, compute_counts(session, campaign))
    transition(session, campaign, "stopped", reason, now)


def gate(session: Session, campaign: Campaign, now: datetime, report: TickReport) -> None:
    """C8 + C9: release what may go now, hold the rest with a visible reason."""
    tz = settings.get(session, "campaign_timezone")
    window = window_for(
        session.get(CampaignCategory, campaign.category_id) if campaign.category_id else None, tz
    )
    mine = and_(_campaign_mails(campaign.id), Mail.status == UNSENT)
    if not window.contains(now):
        opens = window.next_open(now)
        note = f"{HOURS_PREFIX} {window.describe()}; waits until {opens.isoformat()}"
        unreleased = rowcount(
            session.execute(
                update(Mail)
                .where(mine, Mail.due_at.is_(None))
                .values(next_attempt_at=opens, last_error=note)
            )
        )
        # Released mails (e.g. waiting for a retry) must not go out before the opening either.
        retry_wait = and_(
            _campaign_mails(campaign.id), Mail.status == ERROR, Mail.next_attempt_at < opens
        )
        session.execute(update(Mail).where(retry_wait).values(next_attempt_at=opens))
        session.execute(
            update(Mail)
            .where(
                mine,
                Mail.due_at.is_not(None),
                or_(Mail.next_attempt_at.is_(None), Mail.next_attempt_at < opens),
            )
            .values(next_attempt_at=opens)
        )
        report.held_for_hours += unreleased or 0
        return
    shop = session.get_one(Shop, campaign.shop_id)
    waiting = select(Mail.id).where(mine, Mail.due_at.is_(None)).order_by(Mail.id)
    left = None
    if shop.monthly_quota is not None:
        left = quota.quota_status(session, shop.id, now).left
        waiting = waiting.limit(left)
    ids = list(session.scalars(waiting))
    for start in range(0, len(ids), 1000):
        part = ids[start : start + 1000]
        session.execute(
            update(Mail)
            .where(Mail.id.in_(part))
            .values(due_at=now, next_attempt_at=now, last_error=None)
        )
    report.released += len(ids)
    if left is not None:
        q = quota.quota_status(session, shop.id, now)
        resume = quota.next_month_start(now, tz)
        year, mon = quota.month_of(now, tz)
        month = f"{year:04d}-{mon:02d}"
        note = (
            f"{QUOTA_PREFIX} of shop {shop.code} reached: {q.used}/{q.limit} newsletter mails "
            f"used in {month}; waits until {resume.isoformat()}"
        )
        held = rowcount(
            session.execute(
                update(Mail)
                .where(mine, Mail.due_at.is_(None))
                .values(next_attempt_at=resume, last_error=note)
            )
        )
        report.held_for_quota += held or 0
    session.flush()


def step(session: Session, campaign: Campaign, now: datetime, report: TickReport) -> bool:
    """Apply at most one transition; True if the status changed."""
    before = campaign.status
    lock = settings.get(session, "campaign_cancel_lock_minutes")
    if before == "scheduled":
        if now >= campaign.scheduled_at - timedelta(minutes=lock):
            transition(
                session,
                campaign,
                "preparing",
                f"cancel lock: {lock} minutes or less before the scheduled time",
                now,
            )
    elif before == "preparing":
        if now >= campaign.scheduled_at:
            start_sending(session, campaign, now, report)
    elif before == "sending":
        counts = compute_counts(session, campaign)
        store_counts(campaign, counts)
        min_sends = settings.get(session, "campaign_stop_min_sends")
        limit = settings.get(session, "campaign_stop_error_rate")
        if counts.tried >= min_sends and counts.tried and counts.failing / counts.tried > limit:
            stop_campaign(session, campaign, counts, now)
        elif counts.pending == 0:
            transition(
                session,
                campaign,
                "sent",
                f"all {counts.targets} mails processed: {counts.succeeded} sent, "
                f"{counts.errors} errors, {counts.unsent} not sent",
                now,
            )
        else:
            gate(session, campaign, now, report)
    elif before == "sent":
        store_counts(campaign, compute_counts(session, campaign))
        transition(session, campaign, "counting", "counting results", now)
    elif before == "counting":
        counts = compute_counts(session, campaign)
        store_counts(campaign, counts)
        if counts.pending == 0:
            transition(
                session,
                campaign,
                "counted",
                f"final: targets {counts.targets}, succeeded {counts.succeeded}, "
                f"errors {counts.errors}, unsent {counts.unsent}",
                now,
            )
    if campaign.status != before:
        report.transitions.append((campaign.id, before, campaign.status))
        return True
    return False


def tick(
    session: Session, now: datetime | None = None, campaign_ids: list[int] | None = None
) -> TickReport:
    """One pass of the status machine over every live campaign (the DAG's job)."""
    now = now or datetime.now(UTC)
    report = TickReport()
    take_write_lock(session)
    apply_spooled_unsubscribes(session)  # opt-outs the public page could not write at once
    query = (
        select(Campaign)
        .where(Campaign.status.in_(ACTIVE))
        .order_by(Campaign.scheduled_at, Campaign.id)
    )
    if campaign_ids:
        query = query.where(Campaign.id.in_(campaign_ids))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # two ticks at once never double-work
    for campaign in session.scalars(query).all():
        for _ in range(len(ACTIVE) + 1):  # chain transitions that are already due
            if not step(session, campaign, now, report):
                break
    # Late bounces change finished campaigns' counts for a while.
    recent = now - timedelta(days=RECOUNT_DAYS)
    for campaign in session.scalars(
        select(Campaign).where(
            Campaign.status.in_(("counted", "stopped")), Campaign.status_changed_at >= recent
        )
    ):
        store_counts(campaign, compute_counts(session, campaign))
    session.flush()
    return report
