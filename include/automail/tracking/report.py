"""Figures of a campaign or a step sequence (per step) and of each tracked link.

Definitions (seed 002): delivered = sent and no bounce recorded; open rate = unique
opens / delivered mails with an HTML part (text-only readers cannot be counted; nor can
the text-part readers of a multipart mail); a person's click implies an open (images
blocked), so unique opens include clickers; click rate = unique clicks / delivered;
click-to-open = unique clicks / unique opens; unsubscribes = recipients who opted out
after the mail was sent, within `UNSUBSCRIBE_DAYS` of the last send. Machine opens and
clicks (automail.tracking.machine) are counted apart and never in these rates.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, distinct, func, select
from sqlalchemy.orm import Session

from automail.models import Campaign, Customer, Mail, StepSequence, TrackingHit, TrackingLink
from automail.states import CAMPAIGN, SENT, STEP
from automail.tracking.links import TrackingOptions

UNSUBSCRIBE_DAYS = 7


@dataclass
class Figures:
    label: str
    scope: str
    scope_id: int
    sent: int = 0
    delivered: int = 0
    delivered_html: int = 0
    bounces: int = 0
    unsubscribes: int = 0
    unique_opens: int = 0
    total_opens: int = 0
    unique_clicks: int = 0
    total_clicks: int = 0
    machine_opens: int = 0
    machine_clicks: int = 0
    open_rate: float | None = None
    click_rate: float | None = None
    click_to_open: float | None = None


@dataclass
class LinkFigures:
    scope: str
    scope_id: int
    link_id: int
    url: str
    unique_clicks: int = 0
    total_clicks: int = 0
    machine_clicks: int = 0
    click_rate: float | None = None


@dataclass
class Report:
    title: str
    kind: str  # campaign | sequence
    id: int
    options: TrackingOptions
    rows: list[Figures]
    links: list[LinkFigures]
    series: list[tuple[datetime, int, int, int]]  # bucket, opens, clicks, machine hits
    bucket: str  # hour | day
    notes: list[str] = field(default_factory=list)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _mails_of(scope: str, scope_id: int):  # noqa: ANN202
    if scope == "campaign":
        return and_(
            Mail.campaign_id == scope_id,
            Mail.kind == CAMPAIGN,
            Mail.source_key.like(f"campaign:{scope_id}:%"),  # not the test sends
        )
    return and_(Mail.kind == STEP, Mail.source_key.like(f"step:{scope_id}:%"))


def scope_figures(session: Session, label: str, scope: str, scope_id: int) -> Figures:
    f = Figures(label, scope, scope_id)
    mails = _mails_of(scope, scope_id)
    sent = Mail.status == SENT
    bounced = and_(sent, Mail.bounce_outcome.is_not(None))
    delivered = and_(sent, Mail.bounce_outcome.is_(None))
    row = session.execute(
        select(
            func.count(case((sent, 1))),
            func.count(case((bounced, 1))),
            func.count(case((and_(delivered, Mail.body_html.is_not(None)), 1))),
            func.max(Mail.sent_at),
        ).where(mails)
    ).one()
    f.sent, f.bounces, f.delivered_html, last_sent = int(row[0]), int(row[1]), int(row[2]), row[3]
    f.delivered = f.sent - f.bounces
    if last_sent is not None:
        f.unsubscribes = (
            session.scalar(
                select(func.count(distinct(Customer.id)))
                .join(Mail, Mail.customer_id == Customer.id)
                .where(
                    mails,
                    sent,
                    Customer.unsubscribed_at >= Mail.sent_at,
                    Customer.unsubscribed_at < last_sent + timedelta(days=UNSUBSCRIBE_DAYS),
                )
            )
            or 0
        )
    hits = and_(TrackingHit.scope == scope, TrackingHit.scope_id == scope_id)
    human, machine = TrackingHit.machine.is_(None), TrackingHit.machine.is_not(None)
    is_open, is_click = TrackingHit.kind == "open", TrackingHit.kind == "click"
    h = session.execute(
        select(
            func.count(distinct(case((human, TrackingHit.mail_id)))),
            func.count(case((and_(human, is_open), 1))),
            func.count(distinct(case((and_(human, is_click), TrackingHit.mail_id)))),
            func.count(case((and_(human, is_click), 1))),
            func.count(case((and_(machine, is_open), 1))),
            func.count(case((and_(machine, is_click), 1))),
        ).where(hits)
    ).one()
    (f.unique_opens, f.total_opens, f.unique_clicks, f.total_clicks) = (int(v) for v in h[:4])
    f.machine_opens, f.machine_clicks = int(h[4]), int(h[5])
    f.open_rate = _rate(f.unique_opens, f.delivered_html)
    f.click_rate = _rate(f.unique_clicks, f.delivered)
    f.click_to_open = _rate(f.unique_clicks, f.unique_opens)
    return f


def link_figures(session: Session, scope: str, scope_id: int, delivered: int) -> list[LinkFigures]:
    human = TrackingHit.machine.is_(None)
    rows = session.execute(
        select(
            TrackingLink.id,
            TrackingLink.url,
            func.count(distinct(case((human, TrackingHit.mail_id)))),
            func.count(case((human, 1))),
            func.count(case((TrackingHit.machine.is_not(None), 1))),
        )
        .outerjoin(
            TrackingHit, and_(TrackingHit.link_id == TrackingLink.id, TrackingHit.kind == "click")
        )
        .where(TrackingLink.scope == scope, TrackingLink.scope_id == scope_id)
        .group_by(TrackingLink.id, TrackingLink.url)
        .order_by(TrackingLink.id)
    )
    return [
        LinkFigures(scope, scope_id, i, url, int(u), int(t), int(m), _rate(int(u), delivered))
        for i, url, u, t, m in rows
    ]


def _series(session: Session, scopes: list[tuple[str, int]]) -> tuple[list, str]:
    rows: list[tuple[datetime, str, bool]] = []
    for scope, scope_id in scopes:
        rows += session.execute(
            select(TrackingHit.at, TrackingHit.kind, TrackingHit.machine.is_not(None)).where(
                TrackingHit.scope == scope, TrackingHit.scope_id == scope_id
            )
        ).all()
    if not rows:
        return [], "hour"
    first, last = min(r[0] for r in rows), max(r[0] for r in rows)
    daily = last - first > timedelta(days=3)
    step = timedelta(days=1) if daily else timedelta(hours=1)

    def floor(at: datetime) -> datetime:
        at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return at.replace(hour=0) if daily else at

    buckets: dict[datetime, list[int]] = {}
    at = floor(first)
    while at <= floor(last):
        buckets[at] = [0, 0, 0]
        at += step
    for when, kind, is_machine in rows:
        b = buckets[floor(when)]
        b[2 if is_machine else (0 if kind == "open" else 1)] += 1
    return [(k, *v) for k, v in buckets.items()], "day" if daily else "hour"


def _notes(rows: list[Figures], options: TrackingOptions) -> list[str]:
    notes = []
    if not options.opens:
        notes.append("open tracking is off: opens below come from clicks only")
    if not options.clicks:
        notes.append("click tracking is off")
    text_only = sum(r.delivered - r.delivered_html for r in rows)
    if text_only:
        notes.append(
            f"{text_only} delivered mail(s) have no HTML part: their readers cannot be "
            "counted, so the open rate is over the HTML mails only"
        )
    notes.append("readers of the text part of a multipart mail cannot be counted (no image there)")
    machine = sum(r.machine_opens + r.machine_clicks for r in rows)
    if machine:
        notes.append(
            f"{machine} machine hit(s) (privacy-proxy prefetch, link scanners, previews) "
            "are shown apart and counted in no rate"
        )
    return notes


def campaign_report(session: Session, campaign_id: int) -> Report:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise LookupError(f"campaign_id: no campaign {campaign_id}")
    options = TrackingOptions.of(campaign)
    figures = scope_figures(session, campaign.name, "campaign", campaign.id)
    links = link_figures(session, "campaign", campaign.id, figures.delivered)
    series, bucket = _series(session, [("campaign", campaign.id)])
    title = f"Campaign {campaign.id}: {campaign.name}"
    return Report(
        title, "campaign", campaign.id, options, [figures], links, series, bucket,
        _notes([figures], options),
    )  # fmt: skip


def sequence_report(session: Session, sequence_id: int) -> Report:
    seq = session.get(StepSequence, sequence_id)
    if seq is None:
        raise LookupError(f"sequence_id: no step sequence {sequence_id}")
    options = TrackingOptions.of(seq)
    rows, links = [], []
    for step in seq.steps:
        label = f"#{step.position} +{step.offset_minutes}m {step.subject}"
        f = scope_figures(session, label, "step", step.id)
        rows.append(f)
        links += link_figures(session, "step", step.id, f.delivered)
    series, bucket = _series(session, [("step", s.id) for s in seq.steps])
    title = f"Step sequence {seq.id}: {seq.name}"
    return Report(
        title, "sequence", seq.id, options, rows, links, series, bucket, _notes(rows, options)
    )


def report_csv(report: Report) -> str:
    """One CSV: a row per campaign/step (`row=total`) then per link (`row=link`)."""
    buf = io.StringIO()
    names = list(asdict(report.rows[0]) if report.rows else asdict(Figures("", "", 0)))
    extra = ["link_id", "url"]
    writer = csv.DictWriter(buf, fieldnames=["row", *names, *extra], extrasaction="ignore")
    writer.writeheader()
    for r in report.rows:
        writer.writerow({"row": "total", **asdict(r)})
    for link in report.links:
        writer.writerow({"row": "link", "label": "", **asdict(link)})
    return buf.getvalue()


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
