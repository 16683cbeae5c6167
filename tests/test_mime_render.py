"""The message writer (`render_bytes`; `build_message` is its bytes parsed) (F4).

Once parsed by the stdlib, the bytes give back exactly the mail's fields and bodies, for
Japanese subjects and names, HTML + text, BCC, extra headers, long lines (base64 /
quoted-printable), legacy addresses and text that looks like RFC 2047 encoded words;
both entry points refuse the same unsafe fields with the same error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import compat32
from email.utils import parseaddr

import pytest

from automail.mime import (
    SMTP_POLICY,
    HeaderCache,
    MailBuildError,
    as_bytes,
    build_message,
    render_bytes,
)
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
    "non-ascii extra header value": {"extra_headers": {"X-Campaign": "新茶"}},
    "encoded-word look-alike subject": {"subject": "=?utf-8?q?hi?= there"},
    "encoded-word look-alike name and header": {
        "from_name": "=?utf-8?b?5bGx55Sw?= (literal)",
        "extra_headers": {"X-Tag": "=?iso-8859-1?q?caf=E9?="},
    },
    "long ascii subject, one line or encoded": {"subject": "x" * 1500},
    "long japanese from name (several encoded words)": {"from_name": "髙﨑茶舗" * 12},
    "empty from name": {"from_name": ""},
}


def _from_name(raw: bytes) -> str:
    """The From display name decoded as RFC 2047 6.2 says (the stdlib's address parser
    would put a space between adjacent encoded words)."""
    name, _ = parseaddr(message_from_bytes(raw, policy=compat32)["From"])
    return str(make_header(decode_header(name)))


def _lines(text: str | None) -> list[str]:
    return re.split(r"\r\n|\r|\n", (text or "").rstrip("\r\n"))


def _bodies(msg: EmailMessage) -> list[tuple[str, str | None, list[str]]]:
    parts = list(msg.iter_parts()) if msg.is_multipart() else [msg]
    return [(p.get_content_type(), p.get_content_charset(), _lines(p.get_content())) for p in parts]


@pytest.mark.parametrize("case", CASES)
def test_written_bytes_decode_to_exactly_the_mail(case: str) -> None:
    mail = _mail(**CASES[case])
    raw = render_bytes(mail, SHOP, NOW, HeaderCache())
    got = message_from_bytes(raw, policy=policy.default)
    assert str(got["Subject"]) == mail.subject
    assert _from_name(raw) == mail.from_name
    assert got["From"].addresses[0].addr_spec == mail.from_address
    assert got["To"].addresses[0].addr_spec == mail.to_address
    assert (got["Reply-To"] and got["Reply-To"].addresses[0].addr_spec) == mail.reply_to
    assert got["Bcc"] is None
    for name, value in (mail.extra_headers or {}).items():
        assert str(got[name]) == value
    assert got["Message-ID"] == (mail.message_id or "<automail.42.tea@tea.example.jp>")
    assert got["Date"].datetime == NOW
    want = [("text/plain", mail.body_text), ("text/html", mail.body_html)]
    assert _bodies(got) == [(t, "utf-8", _lines(b)) for t, b in want if b]
    assert not got.defects and all(not p.defects for p in got.walk())
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"\n" not in head.replace(b"\r\n", b"")  # CRLF only
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
        for word in line.split():
            if word.startswith(b"=?"):
                assert len(word) <= 75  # RFC 2047 encoded-word limit
    # build_message is these bytes parsed; as_bytes gives them back unchanged
    assert as_bytes(message_from_bytes(raw, policy=SMTP_POLICY)) == raw
    assert str(build_message(mail, SHOP, NOW)["Subject"]) == mail.subject


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
        ("reply_to", "a@x.jp; b@x.jp"),
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
