"""Who gets a newsletter (C3, C4): saved filters, frozen lists, eligibility, dedupe, CSV.

Everything is one SQL statement built here, so the same rules serve the screen, the
CSV, the scheduler (frozen lists) and the send step, on SQLite and PostgreSQL alike.

Rules, in order:
1. Base set: filter mode → customers of the shop matching the saved filter *now*;
   fixed mode → the list frozen at scheduling (only the checked rows when
   send_to=checked); the filter criteria are not re-applied to a frozen list.
2. Eligibility (C4) always applies at send time, in both modes: marketing_opt_in,
   address_valid, not address_cleaned, unsubscribed_at IS NULL. A customer who opts
   out after a fixed list was frozen is therefore *not* mailed (an opt-out is a legal
   stop, unlike seed 002's SMP which still mails them); a customer who merely stops
   matching the criteria (moved prefecture, ...) *is* mailed in fixed mode.
3. Skip already received (option): customers with a *sent* mail of another campaign
   of the same template (`template_id`), or, for campaigns without a template, of the
   same content fingerprint (`content_hash` of format+subject+body+signature).
4. Dedupe (option, default from setting campaign_dedupe_newest): one customer per
   address (case-insensitive), the newest sign-up wins (ties: highest id).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Select, and_, exists, false, func, literal, select, true
from sqlalchemy.orm import Session

from automail.csv_safe import to_text
from automail.models import Campaign, CampaignRecipient, Customer, Mail, Order
from automail.states import CAMPAIGN, SENT
from automail.tracking.audience import tracking_clauses

FILTER_KEYS = {
    "prefectures": 'list of prefecture names, e.g. ["東京都", "大阪府"]',
    "min_purchases": "int >= 0 (number of orders)",
    "max_purchases": "int >= 0",
    "last_order_from": "date YYYY-MM-DD (local) or ISO datetime",
    "last_order_to": "date YYYY-MM-DD (inclusive) or ISO datetime",
    "has_coupon": "true/false: customer holds a coupon",
    "signed_up_from": "date YYYY-MM-DD or ISO datetime",
    "signed_up_to": "date YYYY-MM-DD (inclusive) or ISO datetime",
    # issue 18 (automail.tracking.audience): people's opens/clicks only, never machines'.
    "received_campaign": "campaign id: was delivered that campaign",
    "opened_campaign": "campaign id: opened (or clicked in) that campaign",
    "not_opened_campaign": "campaign id: did not open that campaign",
    "clicked_link": "tracked link id: clicked that link",
}
TRACKING_KEYS = ("received_campaign", "opened_campaign", "not_opened_campaign", "clicked_link")
CSV_COLUMNS = [
    "customer_id",
    "name",
    "email",
    "prefecture",
    "purchase_count",
    "last_order_at",
    "signed_up_at",
    "coupon_code",
]


def _moment(key: str, value: Any, tz: str, end: bool) -> datetime:
    """A filter bound: plain dates are local days, `_to` dates include the whole day."""
    if not isinstance(value, str):
        raise ValueError(f"audience filter {key}: {value!r} is not a date (YYYY-MM-DD)")
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=1 if end else 0), time(), ZoneInfo(tz))
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ZoneInfo(tz))
    except ValueError as exc:
        raise ValueError(f"audience filter {key}: {value!r} is not a date (YYYY-MM-DD)") from exc
    return moment


def validate_filter(flt: dict | None) -> dict:
    """The filter, checked: each unknown key or bad value is named."""
    flt = dict(flt or {})
    for key, value in flt.items():
        if key not in FILTER_KEYS:
            known = ", ".join(FILTER_KEYS)
            raise ValueError(f"audience filter: unknown key {key!r} (known: {known})")
        if key == "prefectures" and (
            not isinstance(value, list) or not all(isinstance(v, str) and v for v in value)
        ):
            raise ValueError(f"audience filter prefectures: {value!r} is not a list of names")
        if key in ("min_purchases", "max_purchases") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"audience filter {key}: {value!r} is not a whole number >= 0")
        if key == "has_coupon" and not isinstance(value, bool):
            raise ValueError(f"audience filter has_coupon: {value!r} is not true/false")
        if key in TRACKING_KEYS and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"audience filter {key}: {value!r} is not an id (whole number >= 1)")
        if key.endswith(("_from", "_to")):
            _moment(key, value, "Asia/Tokyo", key.endswith("_to"))
    lo, hi = flt.get("min_purchases"), flt.get("max_purchases")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"audience filter: min_purchases {lo} is above max_purchases {hi}")
    return flt


def _order_stats():  # noqa: ANN202
    return (
        select(
            Order.customer_id.label("customer_id"),
            func.count(Order.id).label("purchase_count"),
            func.max(Order.ordered_at).label("last_order_at"),
        )
        .group_by(Order.customer_id)
        .subquery("order_stats")
    )


def eligible_clause():  # noqa: ANN201
    """C4: who may receive marketing mail at all."""
    return and_(
        Customer.marketing_opt_in.is_(True),
        Customer.address_valid.is_(True),
        Customer.address_cleaned.is_(False),
        Customer.unsubscribed_at.is_(None),
    )


def filter_clauses(flt: dict, tz: str) -> tuple[list, bool, Any]:
    """WHERE clauses for a saved filter; the bool says whether order stats are needed."""
    flt = validate_filter(flt)
    clauses: list = []
    stats = _order_stats()
    needs_stats = False
    if "prefectures" in flt:
        clauses.append(Customer.prefecture.in_(flt["prefectures"]))
    if "has_coupon" in flt:
        has = and_(Customer.coupon_code.is_not(None), Customer.coupon_code != "")
        clauses.append(has if flt["has_coupon"] else ~has)
    if "signed_up_from" in flt:
        clauses.append(
            Customer.signed_up_at >= _moment("signed_up_from", flt["signed_up_from"], tz, False)
        )
    if "signed_up_to" in flt:
        clauses.append(
            Customer.signed_up_at < _moment("signed_up_to", flt["signed_up_to"], tz, True)
        )
    clauses += tracking_clauses(flt)
    count = func.coalesce(stats.c.purchase_count, 0)
    if "min_purchases" in flt:
        needs_stats = True
        clauses.append(count >= flt["min_purchases"])
    if "max_purchases" in flt:
        needs_stats = True
        clauses.append(count <= flt["max_purchases"])
    if "last_order_from" in flt:
        needs_stats = True
        clauses.append(
            stats.c.last_order_at >= _moment("last_order_from", flt["last_order_from"], tz, False)
        )
    if "last_order_to" in flt:
        needs_stats = True
        clauses.append(
            stats.c.last_order_at < _moment("last_order_to", flt["last_order_to"], tz, True)
        )
    return clauses, needs_stats, stats


def matching_ids(shop_id: int, flt: dict | None, tz: str, *, eligible: bool = True) -> Select:
    """SELECT customer ids of the shop matching the filter (and C4 when `eligible`)."""
    clauses, needs_stats, stats = filter_clauses(flt or {}, tz)
    query = select(Customer.id.label("id")).where(Customer.shop_id == shop_id, *clauses)
    if needs_stats:
        query = query.outerjoin(stats, stats.c.customer_id == Customer.id)
    if eligible:
        query = query.where(eligible_clause())
    return query


def _already_received(campaign: Campaign):  # noqa: ANN202
    other = select(Campaign.id).where(
        Campaign.id != campaign.id, Campaign.shop_id == campaign.shop_id
    )
    if campaign.template_id is not None:
        other = other.where(Campaign.template_id == campaign.template_id)
    elif campaign.content_hash:
        other = other.where(Campaign.content_hash == campaign.content_hash)
    else:
        return false()
    return exists(
        select(Mail.id).where(
            Mail.customer_id == Customer.id,
            Mail.kind == CAMPAIGN,
            Mail.status == SENT,
            Mail.campaign_id.in_(other),
        )
    )


def dedupe_newest(ids: Select) -> Select:
    """Keep one customer per address (case-insensitive): the newest sign-up, then id."""
    base = ids.subquery("candidates")
    ranked = (
        select(
            Customer.id.label("id"),
            func.row_number()
            .over(
                partition_by=func.lower(Customer.email),
                order_by=(Customer.signed_up_at.desc(), Customer.id.desc()),
            )
            .label("rn"),
        )
        .join(base, base.c.id == Customer.id)
        .subquery("ranked")
    )
    return select(ranked.c.id.label("id")).where(ranked.c.rn == 1)


def campaign_audience(session: Session, campaign: Campaign, tz: str) -> Select:
    """SELECT ids of the customers this campaign goes to if it were sent now."""
    if campaign.audience_mode == "fixed":
        frozen = select(CampaignRecipient.customer_id).where(
            CampaignRecipient.campaign_id == campaign.id,
            CampaignRecipient.checked.is_(True) if campaign.send_to == "checked" else true(),
        )
        ids = select(Customer.id.label("id")).where(
            Customer.shop_id == campaign.shop_id, Customer.id.in_(frozen), eligible_clause()
        )
    else:
        ids = matching_ids(campaign.shop_id, campaign.audience_filter, tz)
    if campaign.skip_already_received:
        ids = ids.where(~_already_received(campaign))
    if campaign.dedupe_newest:
        ids = dedupe_newest(ids)
    return ids


def freeze(session: Session, campaign: Campaign, ids: Select, checked: Iterable[int] | None) -> int:
    """Store the audience as CampaignRecipient rows (fixed mode), in one INSERT … SELECT."""
    sub = ids.subquery("frozen")
    session.execute(
        CampaignRecipient.__table__.insert().from_select(
            ["campaign_id", "customer_id", "checked"],
            select(literal(campaign.id), sub.c.id, literal(checked is None)),
        )
    )
    if checked is not None:
        wanted = set(checked)
        present = set(
            session.scalars(
                select(CampaignRecipient.customer_id).where(
                    CampaignRecipient.campaign_id == campaign.id,
                    CampaignRecipient.customer_id.in_(wanted),
                )
            )
        )
        missing = sorted(wanted - present)
        if missing:
            raise ValueError(
                f"checked customer ids {missing} are not in the audience of campaign "
                f"{campaign.name!r} (not matching the filter, not eligible, or other shop)"
            )
        session.execute(
            CampaignRecipient.__table__.update()
            .where(
                CampaignRecipient.campaign_id == campaign.id,
                CampaignRecipient.customer_id.in_(wanted),
            )
            .values(checked=True)
        )
    session.flush()
    return (
        session.scalar(
            select(func.count())
            .select_from(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == campaign.id)
        )
        or 0
    )


def audience_frame(session: Session, ids: Select) -> pd.DataFrame:
    stats = _order_stats()
    sub = ids.subquery("aud")
    rows = session.execute(
        select(
            Customer.id,
            Customer.name,
            Customer.email,
            Customer.prefecture,
            func.coalesce(stats.c.purchase_count, 0),
            stats.c.last_order_at,
            Customer.signed_up_at,
            Customer.coupon_code,
        )
        .join(sub, sub.c.id == Customer.id)
        .outerjoin(stats, stats.c.customer_id == Customer.id)
        .order_by(Customer.id)
    ).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=CSV_COLUMNS)


def audience_csv(session: Session, ids: Select, *, bom: bool = True) -> str:
    """The audience as CSV text through the one CSV writer (automail.csv_safe)."""
    frame = audience_frame(session, ids).astype(object)
    rows = ([None if pd.isna(v) else v for v in r] for r in frame.itertuples(index=False))
    return to_text(CSV_COLUMNS, rows, bom=bom)


def count(session: Session, ids: Select) -> int:
    return session.scalar(select(func.count()).select_from(ids.subquery("n"))) or 0


def newest_eligible(session: Session, shop_id: int) -> Customer | None:
    """C2: the customer whose data fills a test mail (seed 002: newest registration)."""
    return session.scalars(
        select(Customer)
        .where(Customer.shop_id == shop_id, eligible_clause())
        .order_by(Customer.signed_up_at.desc(), Customer.id.desc())
        .limit(1)
    ).first()


__all__ = [
    "FILTER_KEYS",
    "audience_csv",
    "audience_frame",
    "campaign_audience",
    "count",
    "dedupe_newest",
    "eligible_clause",
    "freeze",
    "matching_ids",
    "newest_eligible",
    "validate_filter",
]
