"""Audience filter clauses from tracking data (issue 18): received / opened / did not
open campaign X, clicked link Y. Only people's hits count (machine = NULL), and a
click counts as an open, as in the report (automail.tracking.report)."""

from __future__ import annotations

from sqlalchemy import exists, select

from automail.models import Customer, Mail, TrackingHit
from automail.states import CAMPAIGN, SENT


def opened(campaign_id: int):  # noqa: ANN201
    return exists(
        select(TrackingHit.id).where(
            TrackingHit.scope == "campaign",
            TrackingHit.scope_id == campaign_id,
            TrackingHit.customer_id == Customer.id,
            TrackingHit.machine.is_(None),
        )
    )


def received(campaign_id: int):  # noqa: ANN201
    return exists(
        select(Mail.id).where(
            Mail.campaign_id == campaign_id,
            Mail.kind == CAMPAIGN,
            Mail.source_key.like(f"campaign:{campaign_id}:%"),
            Mail.customer_id == Customer.id,
            Mail.status == SENT,
            Mail.bounce_outcome.is_(None),
        )
    )


def clicked(link_id: int):  # noqa: ANN201
    return exists(
        select(TrackingHit.id).where(
            TrackingHit.link_id == link_id,
            TrackingHit.kind == "click",
            TrackingHit.customer_id == Customer.id,
            TrackingHit.machine.is_(None),
        )
    )


def tracking_clauses(flt: dict) -> list:
    clauses = []
    if "received_campaign" in flt:
        clauses.append(received(flt["received_campaign"]))
    if "opened_campaign" in flt:
        clauses.append(opened(flt["opened_campaign"]))
    if "not_opened_campaign" in flt:
        clauses.append(~opened(flt["not_opened_campaign"]))
    if "clicked_link" in flt:
        clauses.append(clicked(flt["clicked_link"]))
    return clauses
