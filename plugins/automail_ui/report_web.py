"""Opens and clicks reports on the management screen (issue 18), as a router of the
automail_ui app: a campaign's or a sequence's figures, per-link table, a server-drawn
SVG chart, and the one-step "resend to non-openers" (role user and up, CSRF-checked)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from sqlalchemy import or_, select

from automail.campaigns.schedule import CampaignRefused
from automail.models import Campaign, StepSequence
from automail.tracking.chart import svg_chart
from automail.tracking.report import Report, campaign_report, percent, sequence_report
from automail_ui import csrf
from automail_ui.web import ACT, READ, SessionDep, _back, _factory, _jsonable, _page, _tz

router = APIRouter()
ROWS = (
    ("delivered", "Delivered / 配信数"),
    ("unique_opens", "Unique opens / 開封数"),
    ("total_opens", "Total opens"),
    ("open_rate", "Open rate / 開封率"),
    ("unique_clicks", "Unique clicks / クリック数"),
    ("total_clicks", "Total clicks"),
    ("click_rate", "Click rate / クリック率"),
    ("click_to_open", "Click-to-open rate"),
    ("unsubscribes", "Unsubscribes / 配信停止"),
    ("bounces", "Bounces / エラー"),
    ("machine_opens", "Machine opens (not counted)"),
    ("machine_clicks", "Machine clicks (not counted)"),
)


def _shown(attr: str, value: Any) -> str:
    return percent(value) if attr.endswith(("_rate", "_open")) else str(value)


def _render(request: Request, user: Any, session: Any, report: Report, **ctx: Any) -> HTMLResponse:
    tz = _tz(session)
    chart = svg_chart(
        report.series, label=lambda d: d.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M")
    )
    return _page(
        request,
        "report.html",
        user,
        tz=tz,
        report=report,
        rows=ROWS,
        shown=_shown,
        percent=percent,
        chart=Markup(chart),  # built from numbers and escaped labels only
        **ctx,
    )


@router.get("/reports", response_class=HTMLResponse, dependencies=READ)
def reports_index(request: Request, user: GetUserDep, session: SessionDep) -> HTMLResponse:
    tracked = or_(Campaign.track_opens.is_(True), Campaign.track_clicks.is_(True))
    campaigns = session.scalars(select(Campaign).where(tracked).order_by(Campaign.id.desc()))
    seq_tracked = or_(StepSequence.track_opens.is_(True), StepSequence.track_clicks.is_(True))
    sequences = session.scalars(
        select(StepSequence).where(seq_tracked).order_by(StepSequence.id.desc())
    )
    return _page(
        request,
        "reports.html",
        user,
        tz=_tz(session),
        campaigns=list(campaigns),
        sequences=list(sequences),
    )


@router.get("/reports/campaigns/{campaign_id}", response_class=HTMLResponse, dependencies=READ)
def campaign_page(
    request: Request, campaign_id: int, user: GetUserDep, session: SessionDep
) -> HTMLResponse:
    try:
        report = campaign_report(session, campaign_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    campaign = session.get(Campaign, campaign_id)
    params = request.query_params
    return _render(
        request,
        user,
        session,
        report,
        campaign=campaign,
        error=params.get("error"),
        resent=params.get("resent"),
    )


@router.get("/reports/sequences/{sequence_id}", response_class=HTMLResponse, dependencies=READ)
def sequence_page(
    request: Request, sequence_id: int, user: GetUserDep, session: SessionDep
) -> HTMLResponse:
    try:
        report = sequence_report(session, sequence_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return _render(request, user, session, report, campaign=None, error=None, resent=None)


@router.post("/reports/campaigns/{campaign_id}/resend", dependencies=ACT)
async def resend_form(request: Request, campaign_id: int, user: GetUserDep) -> RedirectResponse:
    from automail.cli.times import parse_time
    from automail.tracking.resend import resend_to_non_openers

    form = await request.form()
    actor = user.get_name()
    csrf.check_form(request, form.get("csrf_token"), actor)  # type: ignore[arg-type]
    back = f"/reports/campaigns/{campaign_id}"
    with _factory()() as session:
        try:
            raw_at = str(form.get("at") or "").strip()
            at: datetime | None = None
            if raw_at:
                at = parse_time("at", raw_at, ZoneInfo(_tz(session)))
            campaign = resend_to_non_openers(session, campaign_id, scheduled_at=at, actor=actor)
            session.commit()
        except (CampaignRefused, ValueError, LookupError) as exc:
            session.rollback()
            return _back(request, back, error=str(exc))
        return _back(request, back, resent=campaign.id)


@router.get("/api/reports/campaigns/{campaign_id}", dependencies=READ)
def api_campaign_report(campaign_id: int, session: SessionDep) -> dict[str, Any]:
    try:
        report = campaign_report(session, campaign_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return _jsonable(asdict(report))
