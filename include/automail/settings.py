"""Global settings, stored in the `settings` table with typed defaults.

Every tunable the SPEC names lives here once (caps, windows, retries), so code
never spreads the literals and operators change them with `automail settings set`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.models import Setting

# A check returns None for a good value, else the allowed values in words.
Check = Callable[[Any], str | None]


def between(lo: float, hi: float) -> Check:
    """A number in [lo, hi] (finite); the type itself is checked by `put`."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi
        return None if ok else f"a number from {lo:,} to {hi:,}"

    return check


def list_between(lo: int, hi: int, longest: int = 20) -> Check:
    def check(value: Any) -> str | None:
        ok = 0 < len(value) <= longest and all(type(v) is int and lo <= v <= hi for v in value)
        return None if ok else f"a list of 1 to {longest} whole numbers from {lo:,} to {hi:,}"

    return check


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def time_zone(value: Any) -> str | None:
    if value in _zones():
        ZoneInfo(value)
        return None
    return "an IANA time zone name such as 'Asia/Tokyo' or 'UTC'"


def http_url(value: Any) -> str | None:
    parts = urlsplit(value)
    ok = parts.scheme in ("http", "https") and bool(parts.netloc) and value.strip() == value
    return None if ok else "an http:// or https:// URL with a host, e.g. https://shop.example.jp"


def pacing_overrides(value: Any) -> str | None:
    """{"domain": {"per_session": N | null, "per_minute": M | null}} (sending/pacing.py)."""
    shape = 'e.g. {"docomo.ne.jp": {"per_session": 100, "per_minute": 300}}'
    for domain, limits in value.items():
        if not isinstance(domain, str) or "@" in domain or not 0 < len(domain) <= 255:
            return f"domain names as keys ({domain!r} is not one); {shape}"
        if not isinstance(limits, dict) or set(limits) - {"per_session", "per_minute"}:
            return f"per domain an object with per_session and/or per_minute; {shape}"
        for name, n in limits.items():
            if n is not None and (type(n) is not int or not 1 <= n <= 1_000_000):
                return f"{domain}.{name}: null or a whole number from 1 to 1,000,000; {shape}"
    return None


def drop_location(value: Any) -> str | None:
    """'' (var/import), a folder path or an object-storage URL: one line, no controls."""
    ok = len(value) <= 1000 and value.strip() == value and value.isprintable()
    return (
        None if ok else "'' or a folder path / URL (s3://…) of at most 1,000 printable characters"
    )


def any_value(_value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class SettingSpec:
    default: Any
    help: str
    check: Check = any_value


SETTINGS: dict[str, SettingSpec] = {
    "mail_server_stopped": SettingSpec(False, "A4: when true nothing is sent, whatever the DAGs"),
    "send_cap_per_run": SettingSpec(
        30000, "B7: most mails one send run sends; the rest are held", between(1, 10_000_000)
    ),
    "send_batch_size": SettingSpec(500, "F3: mails per mapped send task", between(1, 100_000)),
    "max_retries": SettingSpec(
        4, "A8: retries after the first failed try, then error", between(0, 50)
    ),
    "retry_backoff_seconds": SettingSpec(
        [60, 300, 900, 3600],
        "A8: wait before retry n (last value repeats)",
        list_between(1, 7 * 86400),
    ),
    "lease_seconds": SettingSpec(
        600, "F3: a claim lapses after this; in-flight mails are held", between(1, 86400)
    ),
    "send_commit_group": SettingSpec(
        20,
        "F3: mails per bookkeeping commit; a killed batch leaves at most twice this many per connection in doubt",
        between(1, 10_000),
    ),
    "lookback_order_confirmation_minutes": SettingSpec(
        7 * 24 * 60, "A3: 1 week", between(0, 5 * 366 * 24 * 60)
    ),
    "lookback_shipping_notice_minutes": SettingSpec(
        7 * 24 * 60, "A3: 1 week", between(0, 5 * 366 * 24 * 60)
    ),
    "lookback_follow_up_minutes": SettingSpec(
        92 * 24 * 60, "A3: 3 months", between(0, 5 * 366 * 24 * 60)
    ),
    "creation_overlap_minutes": SettingSpec(
        24 * 60, "A2: re-cover this much before each run", between(0, 366 * 24 * 60)
    ),
    "creation_partitions": SettingSpec(2, "F3: parallel creation tasks per run", between(1, 64)),
    "creation_chunk_size": SettingSpec(
        5000, "A2: source rows read and inserted per chunk", between(1, 1_000_000)
    ),
    "follow_up_delay_minutes": SettingSpec(
        7 * 24 * 60, "A3: follow-up due after shipment", between(0, 366 * 24 * 60)
    ),
    "domain_rate_per_minute": SettingSpec(
        0,
        "per recipient domain per minute of the send schedule, where domain_pacing sets none; 0 = off",
        between(0, 1_000_000),
    ),
    "domain_pacing": SettingSpec(
        {},
        'H2: {"domain": {"per_session": N, "per_minute": M}} on top of the carrier defaults',
        pacing_overrides,
    ),
    "domain_backoff_seconds": SettingSpec(
        300, "H2: a paced domain answering 4xx waits this long", between(1, 24 * 3600)
    ),
    "send_interval_minutes": SettingSpec(
        5,
        "minutes between send runs outside Airflow (the DAG passes its own schedule)",
        between(1, 24 * 60),
    ),
    "history_limit": SettingSpec(1000, "A9: newest N mails in send history", between(1, 100_000)),
    "ui_timezone": SettingSpec("Asia/Tokyo", "B2: zone of the screen's dates and times", time_zone),
    "campaign_min_lead_minutes": SettingSpec(
        3, "C1: schedule at least this far ahead", between(0, 366 * 24 * 60)
    ),
    "campaign_cancel_lock_minutes": SettingSpec(
        30, "C6: no cancel this close to send time", between(0, 366 * 24 * 60)
    ),
    "campaign_stop_error_rate": SettingSpec(
        0.10, "C7: stop above this error rate", between(0.0, 1.0)
    ),
    "campaign_stop_min_sends": SettingSpec(
        50, "C7: ... once this many were tried", between(1, 10_000_000)
    ),
    "invalid_after_failures": SettingSpec(
        3, "E3: consecutive failures that invalidate", between(1, 100)
    ),
    "bounce_fallback_days": SettingSpec(
        60,
        "E1: a bounce with no id is matched to the newest mail sent this recently",
        between(0, 3660),
    ),
    "public_base_url": SettingSpec("http://localhost:8080", "base of unsubscribe links", http_url),
    "campaign_dedupe_newest": SettingSpec(
        True, "C4: default for new campaigns: same address twice -> newest customer only"
    ),
    "campaign_timezone": SettingSpec(
        "Asia/Tokyo", "C8/C9: zone of allowed hours and quota months", time_zone
    ),
    "import_drop_location": SettingSpec(
        "",
        "import: folder or URL (s3://…) holding <shop>/<kind>/*.csv; '' = var/import",
        drop_location,
    ),
    "import_settle_seconds": SettingSpec(
        5,
        "import: a dropped file is read once unchanged this long (still being copied?)",
        between(0, 3600),
    ),
    "import_chunk_rows": SettingSpec(
        50000, "import: rows checked and upserted per commit", between(100, 1_000_000)
    ),
}


class UnknownSetting(KeyError):
    def __str__(self) -> str:
        return f"unknown setting {self.args[0]!r}; known: {', '.join(sorted(SETTINGS))}"


def get(session: Session, key: str) -> Any:
    if key not in SETTINGS:
        raise UnknownSetting(key)
    raw = session.scalar(select(Setting.value).where(Setting.key == key))
    if raw is None:
        return SETTINGS[key].default
    # A value stored before ranges were checked (or by hand) fails here, naming itself,
    # not later deep inside a run.
    return _checked(key, json.loads(raw), stored=True)


def put(session: Session, key: str, value: Any, actor: str = "system") -> None:
    """Store a setting; the type must match the default's (bool stays bool...) and the
    value must be in the setting's range."""
    value = _checked(key, value)
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=json.dumps(value), updated_by=actor))
    else:
        row.value, row.updated_by = json.dumps(value), actor
    session.flush()


def _checked(key: str, value: Any, stored: bool = False) -> Any:
    spec = SETTINGS.get(key)
    if spec is None:
        raise UnknownSetting(key)
    where = " (stored; fix it with `automail settings set`)" if stored else ""
    expected = type(spec.default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(
            f"setting {key!r}: value {value!r}{where} is a {type(value).__name__}, "
            f"expected {expected.__name__}"
        )
    allowed = spec.check(value)
    if allowed is not None:
        raise ValueError(
            f"setting {key!r}: value {value!r}{where} is out of range; allowed: {allowed}"
        )
    return value


def parse_cli_value(key: str, text: str) -> Any:
    """Turn `automail settings set KEY TEXT` input into the setting's type."""
    if key not in SETTINGS:
        raise UnknownSetting(key)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
