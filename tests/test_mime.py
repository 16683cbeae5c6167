"""F4: safe headers, RFC 2047 encoding, UTF-8 bodies, stable Message-ID."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from automail.mime import MailBuildError, as_bytes, build_message, message_id_for
from automail.models import Mail, Shop


def _mail(**kw) -> Mail:
    values = {
        "id": 42,
        "shop_id": 1,
        "kind": "order_confirmation",
        "source_key": "order:1",
        "to_address": "hanako@example.jp",
        "from_address": "shop@tea.example.jp",
        "from_name": "お茶の山田園",
        "reply_to": "support@tea.example.jp",
        "bcc": "archive@tea.example.jp",
        "subject": "【お茶の山田園】ご注文ありがとうございます",
        "body_text": "山田 花子 様\nご注文を承りました。",
        "body_html": None,
        "extra_headers": None,
        "message_id": None,
    }
    values.update(kw)
    return Mail(**values)


SHOP = Shop(id=1, code="tea", name="お茶の山田園")


def _roundtrip(mail: Mail):
    return message_from_bytes(as_bytes(build_message(mail, SHOP)), policy=policy.default)


def test_japanese_headers_are_rfc2047_and_body_is_utf8() -> None:
    raw = as_bytes(build_message(_mail(), SHOP))
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()
    assert b"=?utf-8?" in header_block
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "【お茶の山田園】ご注文ありがとうございます"
    assert msg["From"].addresses[0].display_name == "お茶の山田園"
    assert msg["From"].addresses[0].addr_spec == "shop@tea.example.jp"
    assert msg["Reply-To"] == "support@tea.example.jp"
    assert msg["Bcc"] is None  # envelope only
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert "ご注文を承りました。" in msg.get_content()
    assert msg["Message-ID"] == "<automail.42.tea@tea.example.jp>"
    assert msg["X-Automail-Id"] == "42"


def test_text_and_html_make_multipart_alternative() -> None:
    msg = _roundtrip(_mail(body_html="<p>山田 花子 様</p>"))
    assert msg.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in msg.iter_parts()]
    assert types == ["text/plain", "text/html"]
    assert "山田 花子 様" in msg.get_body(("html",)).get_content()


def test_html_only_and_extra_headers() -> None:
    unsub = "<https://tea.example.jp/unsubscribe?t=abc>"
    msg = _roundtrip(
        _mail(body_text=None, body_html="<p>news</p>", extra_headers={"List-Unsubscribe": unsub})
    )
    assert msg.get_content_type() == "text/html"
    assert msg["List-Unsubscribe"] == unsub


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "hello\r\nBcc: victim@evil.example"),
        ("subject", "hello\nX-Injected: 1"),
        ("from_name", "Shop\rBcc: victim@evil.example"),
        ("to_address", "hanako@example.jp\r\nBcc: victim@evil.example"),
        ("reply_to", "support@tea.example.jp\nBcc: victim@evil.example"),
        ("bcc", "a@tea.example.jp\r\nSubject: spoofed"),
        ("subject", "nul\0byte"),
    ],
)
def test_crlf_injection_is_refused_per_field(field: str, value: str) -> None:
    with pytest.raises(MailBuildError) as info:
        build_message(_mail(**{field: value}), SHOP)
    assert info.value.field == field
    assert info.value.value == value
    assert "header injection" in str(info.value)


def test_injection_through_extra_headers_is_refused() -> None:
    with pytest.raises(MailBuildError, match="extra_headers"):
        build_message(_mail(extra_headers={"X-Tag": "a\r\nBcc: victim@evil.example"}), SHOP)
    with pytest.raises(MailBuildError, match="set by automail"):
        build_message(_mail(extra_headers={"Bcc": "victim@evil.example"}), SHOP)


def test_one_from_and_a_reply_to_list() -> None:
    """Seed 002: From single, Reply-To a comma list (at most 1,000 characters)."""
    with pytest.raises(MailBuildError, match="exactly one address") as info:
        build_message(_mail(from_address="a@x.jp, b@x.jp"), SHOP)
    assert info.value.field == "from_address"
    with pytest.raises(MailBuildError, match="required"):
        build_message(_mail(from_address=""), SHOP)
    msg = build_message(_mail(reply_to="a@x.jp, b@x.jp"), SHOP)
    assert [str(a) for a in msg["Reply-To"].addresses] == ["a@x.jp", "b@x.jp"]
    with pytest.raises(MailBuildError, match="longer than 1000") as info:
        build_message(_mail(reply_to=",".join(["a@x.jp"] * 144)), SHOP)
    assert info.value.field == "reply_to"


def test_mail_without_body_is_refused() -> None:
    with pytest.raises(MailBuildError, match="neither a text nor an HTML body"):
        build_message(_mail(body_text=None, body_html=None), SHOP)


def test_message_id_is_stable_and_marks_resends() -> None:
    assert message_id_for(7, "shop@tea.example.jp", "tea") == "<automail.7.tea@tea.example.jp>"
    assert message_id_for(7, "shop@tea.example.jp", "tea", resend=2) == (
        "<automail.7.tea.r2@tea.example.jp>"
    )
    assert _roundtrip(_mail(message_id="<given@x.jp>"))["Message-ID"] == "<given@x.jp>"
