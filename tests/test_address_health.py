"""Address health by hand (SPEC E3, seed 002): editing the address makes it valid again,
`automail addresses show|reset`, and the flags' effect on newsletter eligibility."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from automail import address_health
from automail.campaigns.audience import matching_ids
from automail.cli import main
from automail.customers import change_email, reset_address
from automail.models import Bounce, Customer, StaffAction
from automail.sample_data import make_customer, make_shop


def _broken(session: Session, email: str = "gone@example.jp") -> Customer:
    shop = make_shop(session)
    c = make_customer(session, shop, email)
    for _ in range(3):
        address_health.record_result(session, c.id, email, "hard", "userunknown: 550 5.1.1")
    session.commit()
    session.refresh(c)
    assert (c.address_valid, c.address_cleaned, c.consecutive_failures) == (False, True, 3)
    return c


def _audience(session: Session, shop_id: int) -> set[int]:
    return set(session.scalars(matching_ids(shop_id, None, "Asia/Tokyo")))


def test_editing_the_address_makes_it_valid_again(session: Session) -> None:
    c = _broken(session)
    assert c.id not in _audience(session, c.shop_id)

    change_email(session, c.id, "hanako.new@example.jp", actor="staff:sato")
    session.commit()

    session.refresh(c)
    assert c.email == "hanako.new@example.jp"
    assert (c.address_valid, c.address_cleaned, c.address_reason) == (True, False, None)
    assert c.consecutive_failures == 0
    assert c.id in _audience(session, c.shop_id)
    action = session.scalars(select(StaffAction)).one()
    assert (action.actor, action.action, action.count) == ("staff:sato", "change_email", 1)
    assert action.detail["old"] == "gone@example.jp"
    assert action.detail["customers"][0]["cleaned"] is True


def test_saving_the_same_address_keeps_the_flags(session: Session) -> None:
    c = _broken(session)
    change_email(session, c.id, "gone@example.jp", actor="staff")
    session.commit()
    session.refresh(c)
    assert (c.address_valid, c.address_cleaned) == (False, True)
    assert session.scalars(select(StaffAction)).all() == []


def test_bad_new_address_is_refused_naming_field_and_value(session: Session) -> None:
    c = _broken(session)
    with pytest.raises(ValueError, match=r"email: address 'taro\.@example\.jp' has a dot"):
        change_email(session, c.id, "taro.@example.jp", actor="staff")
    with pytest.raises(ValueError, match="email: an address is required"):
        change_email(session, c.id, "  ", actor="staff")
    with pytest.raises(LookupError, match="customer_id 999999"):
        change_email(session, 999999, "a@example.jp", actor="staff")
    session.refresh(c)
    assert c.email == "gone@example.jp"


def test_old_address_failures_do_not_follow_the_new_address(session: Session) -> None:
    c = _broken(session)
    change_email(session, c.id, "new@example.jp", actor="staff")
    session.commit()
    # A late bounce for a mail to the old address arrives after the edit.
    address_health.record_result(session, c.id, "gone@example.jp", "hard", "late bounce")
    session.commit()
    session.refresh(c)
    assert (c.address_valid, c.address_cleaned, c.consecutive_failures) == (True, False, 0)


def test_reset_address(session: Session) -> None:
    c = _broken(session, "Gone@Example.jp")
    before = reset_address(session, "gone@example.jp", actor="ops")
    session.commit()
    session.refresh(c)
    assert [h.cleaned for h in before] == [True]
    assert (c.address_valid, c.address_cleaned, c.consecutive_failures) == (True, False, 0)
    with pytest.raises(LookupError, match="no customer has this address"):
        reset_address(session, "nobody@example.jp", actor="ops")


def test_cli_addresses_show_and_reset(
    engine: Engine, session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    c = _broken(session)
    session.add(
        Bounce(
            fingerprint="f" * 64,
            kind="dsn",
            recipient="gone@example.jp",
            outcome="hard",
            smtp_code=550,
            enhanced_code="5.1.1",
            reason="userunknown",
        )
    )
    session.commit()

    assert main(["addresses", "show", "gone@example.jp"]) == 0
    out = capsys.readouterr().out
    assert f"customer {c.id}" in out and "INVALID" in out and "CLEANED" in out
    assert "failures in a row: 3" in out and "userunknown" in out and "5.1.1" in out

    assert main(["addresses", "reset", "gone@example.jp", "--actor", "ops"]) == 0
    assert "valid and not cleaned again" in capsys.readouterr().out
    assert main(["addresses", "show", "gone@example.jp", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["customers"][0]["valid"] is True and shown["customers"][0]["cleaned"] is False
    assert shown["bounces"][0]["enhanced_code"] == "5.1.1"

    assert main(["addresses", "show", "nobody@example.jp"]) == 1
    assert main(["addresses", "reset", "nobody@example.jp"]) == 2
    assert "no customer has this address" in capsys.readouterr().err
