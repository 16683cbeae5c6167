"""How values look in a mail: yen with thousands separators, dates in Japan time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

JST = ZoneInfo("Asia/Tokyo")
_JST_OFFSET = timedelta(hours=9)  # Japan has kept UTC+9 without DST since 1951


def _jst(value: datetime) -> datetime:
    if value.tzinfo is UTC or value.tzinfo is None:  # the store's aware UTC (or naive UTC)
        return value + _JST_OFFSET  # fields of the shifted value are the JST wall clock
    return value.astimezone(JST)


_YEN_CACHE: dict[int, str] = {}


def yen(value: object) -> object:
    """2926 -> '2,926円'; None and text pass through (text may already be formatted)."""
    if type(value) is int:  # the common case first: amounts are int yen
        hit = _YEN_CACHE.get(value)
        if hit is None:
            hit = f"{value:,}円"
            if len(_YEN_CACHE) < 100_000:  # prices and totals repeat; bound the memory
                _YEN_CACHE[value] = hit
        return hit
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{int(value):,}円"
    return value


def jst_date(value: object) -> object:
    """An aware (or naive UTC) datetime -> '2026年11月22日' in Asia/Tokyo."""
    if isinstance(value, datetime):
        d = _jst(value)
        return f"{d.year}年{d.month}月{d.day}日"
    if isinstance(value, date):
        return f"{value.year}年{value.month}月{value.day}日"
    return value


def jst_datetime(value: object) -> object:
    """'2026年11月22日 14:05' in Asia/Tokyo."""
    if isinstance(value, datetime):
        d = _jst(value)
        return f"{d.year}年{d.month}月{d.day}日 {d.hour:02d}:{d.minute:02d}"
    return value


def br(value: object) -> object:
    """HTML bodies: escape, then keep the value's line breaks as <br>."""
    if value is None or value == "":
        return value
    return Markup("<br>\n").join(escape(str(value)).split("\n"))
