"""Settings: every setting is range-checked at `settings set`, naming itself and the allowed range.

A bad value stored before the checks existed fails at read time, naming the setting,
and a creation run with a bad chunk size never marks its window covered (issue 12.8).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.creation import create_transactional, set_kind
from automail.models import Mail, Setting, ShopMailKind
from automail.rendering import install_default_templates
from automail.sample_data import make_customer, make_order, make_shop

# The out-of-range values operators actually typed (issue 12.8), one per kind of mistake.
REFUSED = [
    ("creation_chunk_size", 0),
    ("send_cap_per_run", -5),
    ("lease_seconds", -1),
    ("invalid_after_failures", 0),
    ("campaign_stop_error_rate", 5),
    ("campaign_stop_error_rate", float("nan")),
    ("history_limit", 10**23),
    ("bounce_fallback_days", 10**8),
    ("campaign_timezone", "Nowhere"),
    ("ui_timezone", ""),
    ("retry_backoff_seconds", []),
    ("retry_backoff_seconds", [60, -1]),
    ("public_base_url", "javascript:alert(1)"),
]


@pytest.mark.parametrize(("key", "value"), REFUSED, ids=[f"{k}={v!r}" for k, v in REFUSED])
def test_out_of_range_value_is_refused_naming_setting_and_range(
    session: Session, key: str, value: object
) -> None:
    before = settings.get(session, key)
    with pytest.raises(ValueError, match=f"setting '{key}'.*allowed: ") as err:
        settings.put(session, key, value)
    assert repr(value) in str(err.value)
    assert settings.get(session, key) == before  # nothing stored


def test_every_setting_has_a_check_and_its_default_passes_it() -> None:
    unchecked = [
        key
        for key, spec in settings.SETTINGS.items()
        if spec.check is settings.any_value and not isinstance(spec.default, bool)
    ]
    assert unchecked == []
    for key, spec in settings.SETTINGS.items():
        assert spec.check(spec.default) is None, key


def test_cli_text_is_parsed_then_range_checked(session: Session) -> None:
    value = settings.parse_cli_value("history_limit", "1e23")
    with pytest.raises(ValueError, match="history_limit"):
        settings.put(session, "history_limit", value)
    settings.put(session, "history_limit", settings.parse_cli_value("history_limit", "500"))
    assert settings.get(session, "history_limit") == 500
    settings.put(session, "campaign_timezone", "UTC")
    assert settings.get(session, "campaign_timezone") == "UTC"


def test_bad_value_stored_earlier_fails_at_read_naming_the_setting(session: Session) -> None:
    session.add(Setting(key="lease_seconds", value=json.dumps(-1), updated_by="old"))
    session.flush()
    with pytest.raises(ValueError, match="setting 'lease_seconds': value -1 .*stored"):
        settings.get(session, "lease_seconds")


def test_creation_with_bad_chunk_size_creates_nothing_and_keeps_the_window_open(
    session: Session,
) -> None:
    t = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    install_default_templates(session)
    shop = make_shop(session)
    customer = make_customer(session, shop, email="hanako@example.jp")
    make_order(session, customer, t - timedelta(hours=2), number="N1")
    set_kind(session, shop, "order_confirmation", True, now=t)
    session.add(Setting(key="creation_chunk_size", value="0", updated_by="old"))
    session.commit()
    with pytest.raises(ValueError, match="creation_chunk_size"):
        create_transactional(session, t, t + timedelta(hours=1), now=t)
    session.rollback()
    smk = session.scalar(select(ShopMailKind).where(ShopMailKind.shop_id == shop.id))
    assert smk is not None and smk.covered_until is None
    assert session.scalar(select(Mail.id)) is None
    # Fixed: the next run creates the mail the bad run skipped.
    settings.put(session, "creation_chunk_size", 100)
    session.commit()
    create_transactional(session, t, t + timedelta(hours=1), now=t)
    assert session.scalar(select(Mail.source_key)) is not None
