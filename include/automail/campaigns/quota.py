"""Monthly newsletter quota per shop (C9, seed 004 メール配信数の制限).

What counts: mails of kind `campaign` (newsletters and their test sends) that were
released for sending in the month (`Mail.due_at` is the release time), whatever
became of them afterwards — sent, bounced later, refused (error) or still in flight.
Transactional, step and staff mails never count. A released mail is counted in
the month it was released, even if the SMTP hand-off happens just after midnight.
Months are calendar months in the `campaign_timezone` setting (Asia/Tokyo).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from automail import settings
from automail.models import Mail, Shop
from automail.states import CAMPAIGN, CANCELLED, DELETED


@dataclass(frozen=True)
class Quota:
    used: int
    limit: int | None  # None: unlimited plan
    left: int | None

    def __iter__(self):  # allows `used, limit, left = quota_status(...)`
        return iter((self.used, self.limit, self.left))


def parse_month(text: str) -> tuple[int, int]:
    try:
        year, month = (int(p) for p in text.split("-"))
        datetime(year, month, 1)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"month: {text!r} is not YYYY-MM") from exc
    return year, month


def month_bounds(year: int, month: int, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def month_of(at: datetime, tz: str) -> tuple[int, int]:
    local = at.astimezone(ZoneInfo(tz))
    return local.year, local.month


def used_in_month(session: Session, shop_id: int, start: datetime, end: datetime) -> int:
    return (
        session.scalar(
            select(func.count(Mail.id)).where(
                Mail.shop_id == shop_id,
                Mail.kind == CAMPAIGN,
                Mail.due_at >= start,
                Mail.due_at < end,
                Mail.status.notin_((CANCELLED, DELETED)),
            )
        )
        or 0
    )


def quota_status(session: Session, shop_id: int, month: str | datetime | None = None) -> Quota:
    """(used, limit, left) of a shop for a month ('YYYY-MM', a datetime in it, or now)."""
    tz = settings.get(session, "campaign_timezone")
    if isinstance(month, str):
        year, mon = parse_month(month)
    else:
        year, mon = month_of(month or datetime.now(UTC), tz)
    shop = session.get(Shop, shop_id)
    if shop is None:
        raise LookupError(f"shop_id: no shop {shop_id}")
    start, end = month_bounds(year, mon, tz)
    used = used_in_month(session, shop_id, start, end)
    limit = shop.monthly_quota
    left = None if limit is None else max(0, limit - used)
    return Quota(used, limit, left)


def next_month_start(at: datetime, tz: str) -> datetime:
    year, month = month_of(at, tz)
    return month_bounds(year, month, tz)[1]
