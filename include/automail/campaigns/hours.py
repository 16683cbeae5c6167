"""Allowed sending hours of a campaign category (C8), in the shops' local time.

A window is [from_hour, to_hour) in local hours 0..24. from < to is a daytime
window (9–20), from > to wraps midnight (22–6), from == to or 0–24 means all day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Window:
    from_hour: int = 0
    to_hour: int = 24
    tz: str = "Asia/Tokyo"

    def __post_init__(self) -> None:
        for field, value in (
            ("allowed_from_hour", self.from_hour),
            ("allowed_to_hour", self.to_hour),
        ):
            if not 0 <= value <= 24:
                raise ValueError(f"{field}: {value!r} is not an hour between 0 and 24")

    @property
    def all_day(self) -> bool:
        return self.from_hour % 24 == self.to_hour % 24

    def describe(self) -> str:
        return f"{self.from_hour:02d}:00–{self.to_hour:02d}:00 {self.tz}"

    def contains(self, at: datetime) -> bool:
        if self.all_day:
            return True
        hour = at.astimezone(ZoneInfo(self.tz)).hour
        if self.from_hour < self.to_hour:
            return self.from_hour <= hour < self.to_hour
        return hour >= self.from_hour or hour < self.to_hour

    def next_open(self, at: datetime) -> datetime:
        """`at` itself when inside the window, else the next moment the window opens (UTC)."""
        if self.contains(at):
            return at
        zone = ZoneInfo(self.tz)
        local = at.astimezone(zone)
        opening = datetime.combine(local.date(), time(self.from_hour % 24), tzinfo=zone)
        if opening <= local:
            opening = datetime.combine(
                local.date() + timedelta(days=1), time(self.from_hour % 24), tzinfo=zone
            )
        return opening.astimezone(UTC)


def window_for(category, tz: str) -> Window:  # noqa: ANN001 (CampaignCategory | None)
    if category is None:
        return Window(0, 24, tz)
    return Window(category.allowed_from_hour, category.allowed_to_hour, tz)
