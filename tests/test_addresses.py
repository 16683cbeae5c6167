"""B9 address check and A7 sender-settings validation."""

from __future__ import annotations

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from automail.addresses import (
    PLAIN_ADDRESS,
    _plainly_valid,
    check_address,
    split_address_list,
    validate_sender_settings,
)


@pytest.mark.parametrize(
    "address",
    ["hanako@example.jp", "taro.yamada+shop@mail.example.co.jp", "a_b-c@docomo.ne.jp"],
)
def test_valid_addresses_pass(address: str) -> None:
    assert check_address(address) is None


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("sample.@example.jp", "dot right before the @"),
        (".sample@example.jp", "starts with a dot"),
        ("sa..mple@example.jp", "consecutive dots"),
        ("no-at-sign.example.jp", "has no @"),
        ("two@@example.jp", "more than one @"),
        ("ha nako@example.jp", "spaces"),
        ("hanako@example.jp\r\nBcc: x@evil.example", "line break"),
        ("hanako@localhost", "invalid"),
        ("山田@example.jp", "invalid"),
        ("", "empty"),
    ],
)
def test_bad_addresses_name_the_problem_and_the_address(address: str, words: str) -> None:
    reason = check_address(address)
    assert reason is not None
    assert words in reason
    if address:
        assert repr(address) in reason


def test_split_address_list() -> None:
    assert split_address_list(" a@x.jp, ,b@y.jp ") == ["a@x.jp", "b@y.jp"]
    assert split_address_list(None) == []


def test_sender_settings_accept_good_values() -> None:
    validate_sender_settings("shop@tea.example.jp", "support@tea.example.jp", "a@x.jp, b@y.jp")
    validate_sender_settings("shop@tea.example.jp", "support@tea.example.jp", None)


@pytest.mark.parametrize(
    ("from_address", "reply_to", "bcc", "field"),
    [
        ("", "r@x.jp", None, "from_address"),
        ("a@x.jp, b@x.jp", "r@x.jp", None, "from_address"),
        ("shop.@x.jp", "r@x.jp", None, "from_address"),
        ("a@x.jp", "", None, "reply_to"),
        ("a@x.jp", "r@x.jp;s@x.jp", None, "reply_to"),
        ("a@x.jp", "r@x.jp,s@x.jp", "a" * 995 + "@x.jp", "bcc"),
        ("a@x.jp", "r@x.jp", "ok@x.jp, bad..one@x.jp", "bcc"),
        ("a@x.jp", "r@x.jp", "ok@x.jp; b@x.jp", "bcc"),
    ],
)
def test_sender_settings_errors_name_field_and_value(
    from_address: str, reply_to: str, bcc: str | None, field: str
) -> None:
    with pytest.raises(ValueError, match=field) as info:
        validate_sender_settings(from_address, reply_to, bcc)
    bad = {"from_address": from_address, "reply_to": reply_to, "bcc": bcc}[field]
    assert bad == "" or any(part.strip() in str(info.value) for part in bad.split(","))


@settings(max_examples=500, deadline=None)
@given(st.from_regex(PLAIN_ADDRESS, fullmatch=True))
def test_fast_path_never_accepts_what_email_validator_refuses(address: str) -> None:
    # check_address skips email-validator for addresses of this shape; that is only
    # sound while the library accepts every one of them.
    if _plainly_valid(address):
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
        assert check_address(address) is None
