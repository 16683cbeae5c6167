"""The batch's fast renderer (`render_bytes`) against `build_message` (F4).

Both must refuse the same unsafe fields and, once parsed, give the same headers and the
same decoded bodies, for Japanese subjects and names, HTML + text, BCC, extra headers,
long lines (base64 / quoted-printable) and legacy addresses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from automail.mime import HeaderCache, MailBuildError, as_bytes, build_message, render_bytes
from automail.models import Mail, Shop

SHOP = Shop(id=1, code="tea", name="お茶の山田園")
NOW = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
LONG_JA = "この度はお茶の山田園をご利用いただき誠にありがとうございます。下記の内容で承りました。"
LONG_ASCII = "Thank you for your order. " * 12


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
        "bcc": "archive@tea.example.jp, audit@tea.example.jp",
        "subject": "【お茶の山田園】ご注文ありがとうございます",
        "body_text": "山田 花子 様\nご注文を承りました。",
        "body_html": None,
        "extra_headers": None,
        "message_id": None,
    }
    values.update(kw)
    return Mail(**values)


CASES = {
    "japanese text": {},
    "long japanese lines (base64)": {"body_text": f"山田 花子 様\n\n{LONG_JA}\n" * 15},
    "text + html": {"body_html": f"<p>山田 花子 様</p><p>{LONG_JA}</p>"},
    "html only + extra headers": {
        "body_text": None,
        "body_html": "<p>news</p>",
        "extra_headers": {
            "List-Unsubscribe": "<https://tea.example.jp/unsubscribe?t=abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    },
    "ascii name with specials, long ascii subject": {
        "from_name": "Tea, Shop (Yamada)",
        "subject": "Your order " + "is on its way " * 8,
        "body_text": LONG_ASCII,
    },
    "no reply-to, no bcc": {"reply_to": None, "bcc": None},
    "legacy carrier address": {"to_address": "taro..yamada.@docomo.ne.jp"},
    "4-byte characters and emoji": {
        "from_name": "髙﨑茶舗 🍵",
        "subject": "🍵 新茶のご案内 — 髙﨑茶舗より " * 4,
        "body_text": "🍵" * 40,
    },
    "mixed ascii and japanese subject": {"subject": "Re: [TEA-000123] ご注文の件 (お問い合わせ)"},
    "given message id": {"message_id": "<given.7@tea.example.jp>"},
    "non-ascii extra header value (general path)": {"extra_headers": {"X-Campaign": "新茶"}},
    "encoded-word look-alike subject (general path)": {"subject": "=?utf-8?q?hi?= there"},
    "empty from name": {"from_name": ""},
}


def _headers(msg: EmailMessage) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in msg:
        if name.lower() == "content-type":
            out[name] = (msg.get_content_type(), msg.get_content_charset())
        elif name.lower() in ("from", "to", "reply-to"):
            out[name] = [(a.display_name, a.addr_spec) for a in msg[name].addresses]
        elif name.lower() != "content-transfer-encoding":  # may legitimately differ
            out[name] = str(msg[name])
    return out


def _bodies(msg: EmailMessage) -> list[tuple[str, str | None, str]]:
    parts = list(msg.iter_parts()) if msg.is_multipart() else [msg]
    return [(p.get_content_type(), p.get_content_charset(), p.get_content()) for p in parts]


@pytest.mark.parametrize("case", CASES)
def test_fast_bytes_parse_like_build_message(case: str) -> None:
    mail = _mail(**CASES[case])
    slow = message_from_bytes(as_bytes(build_message(mail, SHOP, NOW)), policy=policy.default)
    raw = render_bytes(mail, SHOP, NOW, HeaderCache())
    fast = message_from_bytes(raw, policy=policy.default)
    assert _headers(fast) == _headers(slow)
    assert _bodies(fast) == _bodies(slow)
    assert fast["Bcc"] is None
    assert not fast.defects and all(not p.defects for p in fast.walk())
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"\n" not in head.replace(b"\r\n", b"")  # CRLF only
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
        for word in line.split():
            if word.startswith(b"=?"):
                assert len(word) <= 75  # RFC 2047 encoded-word limit


def test_the_cache_is_shared_across_mails_and_shops() -> None:
    cache = HeaderCache()
    a = message_from_bytes(render_bytes(_mail(), SHOP, NOW, cache), policy=policy.default)
    b = message_from_bytes(
        render_bytes(_mail(id=43, from_name="Other", from_address="o@other.jp"), None, NOW, cache),
        policy=policy.default,
    )
    assert a["From"].addresses[0].display_name == "お茶の山田園"
    assert (b["From"].addresses[0].display_name, b["From"].addresses[0].addr_spec) == (
        "Other",
        "o@other.jp",
    )
    assert len(cache.from_lines) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "hello\r\nBcc: victim@evil.example"),
        ("from_name", "Shop\rBcc: victim@evil.example"),
        ("to_address", "hanako@example.jp\r\nBcc: victim@evil.example"),
        ("reply_to", "support@tea.example.jp\nBcc: victim@evil.example"),
        ("reply_to", "a@x.jp, b@x.jp"),
        ("from_address", "a@x.jp, b@x.jp"),
        ("bcc", "a@tea.example.jp\r\nSubject: spoofed"),
        ("subject", "nul\0byte"),
        ("extra_headers", {"X-Tag": "a\r\nBcc: victim@evil.example"}),
        ("extra_headers", {"Bcc": "victim@evil.example"}),
        ("body_text", None),
    ],
)
def test_fast_path_refuses_what_build_message_refuses(field: str, value: object) -> None:
    mail = _mail(**{field: value}, **({"body_html": None} if field == "body_text" else {}))
    with pytest.raises(MailBuildError) as slow:
        build_message(mail, SHOP, NOW)
    with pytest.raises(MailBuildError) as fast:
        render_bytes(mail, SHOP, NOW, HeaderCache())
    assert (fast.value.field, fast.value.value, str(fast.value)) == (
        slow.value.field,
        slow.value.value,
        str(slow.value),
    )
