"""Global settings, stored in the `settings` table with typed defaults.

Every tunable the SPEC names lives here once (caps, windows, retries), so code
never spreads the literals and operators change them with `automail settings set`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.models import Setting


@dataclass(frozen=True)
class SettingSpec:
    default: Any
    help: str


SETTINGS: dict[str, SettingSpec] = {
    "mail_server_stopped": SettingSpec(False, "A4: when true nothing is sent, whatever the DAGs"),
    "send_cap_per_run": SettingSpec(30000, "B7: most mails one send run sends; the rest are held"),
    "send_batch_size": SettingSpec(500, "F3: mails per mapped send task"),
    "max_retries": SettingSpec(4, "A8: retries after the first failed try, then error"),
    "retry_backoff_seconds": SettingSpec(
        [60, 300, 900, 3600], "A8: wait before retry n (last value repeats)"
    ),
    "lease_seconds": SettingSpec(600, "F3: a claim lapses after this; in-flight mails are held"),
    "send_commit_group": SettingSpec(
        20, "F3: mails per bookkeeping commit; a killed worker leaves at most this many in doubt"
    ),
    "lookback_order_confirmation_minutes": SettingSpec(7 * 24 * 60, "A3: 1 week"),
    "lookback_shipping_notice_minutes": SettingSpec(7 * 24 * 60, "A3: 1 week"),
    "lookback_follow_up_minutes": SettingSpec(92 * 24 * 60, "A3: 3 months"),
    "creation_overlap_minutes": SettingSpec(24 * 60, "A2: re-cover this much before each run"),
    "creation_partitions": SettingSpec(2, "F3: parallel creation tasks per run"),
    "creation_chunk_size": SettingSpec(5000, "A2: source rows read and inserted per chunk"),
    "follow_up_delay_minutes": SettingSpec(7 * 24 * 60, "A3: follow-up due after shipment"),
    "domain_rate_per_minute": SettingSpec(0, "per recipient domain per run-minute; 0 = off"),
    "history_limit": SettingSpec(1000, "A9: newest N mails in send history"),
    "ui_timezone": SettingSpec("Asia/Tokyo", "B2: zone of the screen's dates and times"),
    "campaign_min_lead_minutes": SettingSpec(3, "C1: schedule at least this far ahead"),
    "campaign_cancel_lock_minutes": SettingSpec(30, "C6: no cancel this close to send time"),
    "campaign_stop_error_rate": SettingSpec(0.10, "C7: stop above this error rate"),
    "campaign_stop_min_sends": SettingSpec(50, "C7: ... once this many were tried"),
    "invalid_after_failures": SettingSpec(3, "E3: consecutive failures that invalidate"),
    "bounce_fallback_days": SettingSpec(
        60, "E1: a bounce with no id is matched to the newest mail sent this recently"
    ),
    "public_base_url": SettingSpec("http://localhost:8080", "base of unsubscribe links"),
    "campaign_dedupe_newest": SettingSpec(
        True, "C4: default for new campaigns: same address twice -> newest customer only"
    ),
    "campaign_timezone": SettingSpec("Asia/Tokyo", "C8/C9: zone of allowed hours and quota months"),
    "import_drop_location": SettingSpec(
        "", "import: folder or URL (s3://…) holding <shop>/<kind>/*.csv; '' = var/import"
    ),
    "import_settle_seconds": SettingSpec(
        5, "import: a dropped file is read once unchanged this long (still being copied?)"
    ),
    "import_chunk_rows": SettingSpec(50000, "import: rows checked and upserted per commit"),
}


class UnknownSetting(KeyError):
    def __str__(self) -> str:
        return f"unknown setting {self.args[0]!r}; known: {', '.join(sorted(SETTINGS))}"


def get(session: Session, key: str) -> Any:
    if key not in SETTINGS:
        raise UnknownSetting(key)
    raw = session.scalar(select(Setting.value).where(Setting.key == key))
    return SETTINGS[key].default if raw is None else json.loads(raw)


def put(session: Session, key: str, value: Any, actor: str = "system") -> None:
    """Store a setting; the type must match the default's (bool stays bool...)."""
    spec = SETTINGS.get(key)
    if spec is None:
        raise UnknownSetting(key)
    expected = type(spec.default)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ValueError(
            f"setting {key!r}: value {value!r} is a {type(value).__name__}, "
            f"expected {expected.__name__}"
        )
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=json.dumps(value), updated_by=actor))
    else:
        row.value, row.updated_by = json.dumps(value), actor
    session.flush()


def parse_cli_value(key: str, text: str) -> Any:
    """Turn `automail settings set KEY TEXT` input into the setting's type."""
    if key not in SETTINGS:
        raise UnknownSetting(key)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
