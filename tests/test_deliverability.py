"""Deliverability options of seed 002, end to end through the real SMTP sink: DKIM
signatures verified by dkimpy on what the sink received; ISO-2022-JP mail decoded back
to its source text; Reply-To and Cc lists in the headers and Cc in the envelope; every
refusal names the field (or the DKIM connection) and the value."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from types import SimpleNamespace

import dkim
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.db import session_factory
from automail.deliverability import (
    DeliverabilitySettingError,
    set_shop_charset,
    set_shop_dkim,
    set_shop_lists,
)
from automail.models import Mail, Shop
from automail.rendering.errors import TemplateError
from automail.rendering.resolve import save_template
from automail.sample_data import make_shop
from automail.sending import run_send_cycle
from automail.sending.dkim_sign import SIGNED_HEADERS, DkimSigner
from automail.sending.smtp import SmtpConfig
from automail.smtp_sink import SmtpSink
from tests.deliverability_helpers import SELECTOR, dkim_key, queue

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
JAPANESE = [
    (
        "【お茶の山田園】ご注文ありがとうございます",
        "山田 花子 様\nご注文を承りました。\n〜 送料無料 〜\n",
    ),
    ("発送のお知らせ", "斎藤 様\n" + "長い行です。" * 60 + "\n.\n..先頭のピリオド\n"),
]


def _send(engine, smtp_sink: SmtpSink, run: str = "deliv"):  # noqa: ANN001, ANN202
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=10)
    return run_send_cycle(session_factory(engine), cfg, run, NOW)


def test_dkim_signature_verifies_on_what_the_sink_received(
    engine, session: Session, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    key = dkim_key()
    monkeypatch.setenv("AIRFLOW_CONN_TEA_DKIM", key.conn_json("tea.example.jp"))
    shop = make_shop(session, "tea")
    set_shop_dkim(session, "tea", "tea_dkim")
    set_shop_lists(session, "tea", reply_to="support@tea.example.jp, desk@tea.example.jp",
                   cc="cc1@tea.example.jp")  # fmt: skip
    plain = make_shop(session, "rice")  # no DKIM: its mail goes out unsigned
    ids = queue(session, shop, JAPANESE, "tea") + queue(session, plain, JAPANESE[:1], "rice")
    session.commit()
    assert _send(engine, smtp_sink).sent == 3
    signed = [m for m in smtp_sink.messages if m.rcpt_tos[0].startswith("tea")]
    assert len(signed) == 2
    for captured in signed:
        # (the sink adds Return-Path in front, as a receiving MTA does)
        assert captured.message["DKIM-Signature"].startswith("v=1; a=rsa-sha256;")
        assert dkim.verify(captured.data, dnsfunc=key.dnsfunc("tea.example.jp"))
        tags = dict(t.strip().split("=", 1) for t in captured.message["DKIM-Signature"].split(";"))
        assert (tags["d"], tags["s"]) == ("tea.example.jp", SELECTOR)
        assert set(tags["h"].replace(" ", "").split(":")) == {h.lower() for h in SIGNED_HEADERS}
        # The check can fail: a changed Subject or body no longer verifies.
        forged = captured.data.replace(b"Subject: =?utf-8?b?", b"Subject: =?utf-8?B?", 1)
        assert forged != captured.data
        assert not dkim.verify(forged, dnsfunc=key.dnsfunc("tea.example.jp"))
        assert not dkim.verify(captured.data + b"PS\r\n", dnsfunc=key.dnsfunc("tea.example.jp"))
    (unsigned,) = [m for m in smtp_sink.messages if m.rcpt_tos[0].startswith("rice")]
    assert b"DKIM-Signature" not in unsigned.data
    session.expire_all()
    assert set(session.scalars(select(Mail.status).where(Mail.id.in_(ids)))) == {"sent"}


def test_openssl_signature_is_dkimpys_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenSSL RSA step gives the very bytes dkimpy's pure-Python RSA gives."""
    key = dkim_key()
    conn = SimpleNamespace(conn_id="k", login=SELECTOR, host="tea.example.jp", password=key.pem)
    signer = DkimSigner.from_connection(conn)
    msg = (
        b"From: shop@tea.example.jp\r\nTo: a@example.jp\r\nSubject: x\r\n"
        b"Date: Tue, 01 Dec 2026 03:00:00 +0000\r\nMessage-ID: <1@tea.example.jp>\r\n\r\nbody\r\n"
    )
    monkeypatch.setattr(dkim.time, "time", lambda: 1_796_000_000)
    ours = signer.sign(msg)
    theirs = dkim.sign(
        msg, SELECTOR.encode(), b"tea.example.jp", signer.pem,
        include_headers=[h.encode() for h in SIGNED_HEADERS],
    )  # fmt: skip
    assert ours == theirs + msg


@pytest.mark.parametrize(
    ("conn", "named"),
    [
        (None, "AIRFLOW_CONN_BROKEN_DKIM"),  # no such connection
        (
            '{"conn_type": "generic", "login": "s1", "host": "tea.example.jp", '
            '"password": "-----BEGIN PRIVATE KEY-----\\nnot a key\\n-----END PRIVATE KEY-----"}',
            "not a PEM private key",
        ),  # fmt: skip
        ('{"conn_type": "generic", "host": "tea.example.jp", "password": "x"}', "selector"),
        ('{"conn_type": "generic", "login": "s1", "password": "x"}', "signing domain"),
    ],
)
def test_broken_dkim_key_is_an_error_naming_the_connection(
    engine,
    session: Session,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    conn: str | None,
    named: str,
) -> None:  # noqa: ANN001
    if conn is not None:
        monkeypatch.setenv("AIRFLOW_CONN_BROKEN_DKIM", conn)
    shop = make_shop(session, "tea")
    with pytest.raises(DeliverabilitySettingError, match="'broken_dkim'") as info:
        set_shop_dkim(session, "tea", "broken_dkim")
    assert named in str(info.value)
    set_shop_dkim(session, "tea", "broken_dkim", check=False)  # the key broke later
    ids = queue(session, shop, JAPANESE, "tea")
    session.commit()
    summary = _send(engine, smtp_sink)
    assert smtp_sink.messages == []  # never sent unsigned
    assert summary.sent == 0
    session.expire_all()
    for mail in session.scalars(select(Mail).where(Mail.id.in_(ids))):
        assert mail.status == "error"
        assert "DKIM connection 'broken_dkim'" in mail.last_error and named in mail.last_error


def test_iso_2022_jp_mail_decodes_back_to_its_source_text(
    engine, session: Session, smtp_sink: SmtpSink
) -> None:  # noqa: ANN001
    shop = make_shop(session, "tea", from_name="お茶の山田園 本店")
    set_shop_charset(session, "tea", "iso-2022-jp")
    ids = queue(session, shop, JAPANESE, "tea")
    session.commit()
    assert _send(engine, smtp_sink).sent == 2
    received = {m.rcpt_tos[0]: m for m in smtp_sink.messages}
    for i, (subject, body) in enumerate(JAPANESE):
        raw = received[f"tea{i}@example.jp"].data
        assert raw.isascii()  # 7-bit all through: the point of ISO-2022-JP
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        assert b"=?iso-2022-jp?b?" in raw.split(b"\r\n\r\n", 1)[0]
        msg = message_from_bytes(raw, policy=policy.default)
        assert msg.get_content_charset() == "iso-2022-jp"
        assert msg["Content-Transfer-Encoding"] == "7bit"
        assert str(msg["Subject"]) == subject
        assert msg["From"].addresses[0].display_name == "お茶の山田園 本店"
        assert msg.get_content().replace("\r\n", "\n") == body
    session.expire_all()
    assert set(session.scalars(select(Mail.status).where(Mail.id.in_(ids)))) == {"sent"}


def test_text_outside_jis_x_0208_is_an_error_naming_field_and_characters(
    engine, session: Session, smtp_sink: SmtpSink
) -> None:  # noqa: ANN001
    shop = make_shop(session, "tea")
    set_shop_charset(session, "tea", "iso-2022-jp")
    ids = queue(
        session, shop, [("ご注文", "髙橋 様 ①"), ("😀 セール", "本文"), ("ok", "ｶﾀｶﾅ")], "t"
    )
    session.commit()
    assert _send(engine, smtp_sink).sent == 0
    assert smtp_sink.messages == []
    session.expire_all()
    errors = [session.get(Mail, i).last_error for i in ids]
    assert "body_text" in errors[0] and "'髙'" in errors[0] and "'①'" in errors[0]
    assert "subject" in errors[1] and "U+1F600" in errors[1]
    assert "half-width katakana" in errors[2]
    assert all("iso-2022-jp" in e and "?" not in e.split(":", 1)[0] for e in errors)


def test_template_save_reports_characters_the_shop_charset_cannot_carry(session: Session) -> None:
    shop = make_shop(session, "tea")
    save_template(session, shop.id, "order_confirmation", "pc", 0, "", "ご注文", "㈱山田園 ①", None)
    with pytest.raises(DeliverabilitySettingError) as info:  # its templates hold ㈱ and ①
        set_shop_charset(session, "tea", "iso-2022-jp")
    assert "body_text" in str(info.value) and "'㈱'" in str(info.value)
    save_template(session, shop.id, "order_confirmation", "pc", 0, "", "ご注文", "山田園", None)
    set_shop_charset(session, "tea", "iso-2022-jp")
    with pytest.raises(TemplateError) as err:
        save_template(session, shop.id, "shipping_notice", "pc", 0, "", "発送 🚚", "髙橋 様", None)
    assert err.value.field == "subject"
    assert "'🚚'" in str(err.value) and "'髙'" in str(err.value) and "body_text" in str(err.value)
    # A common default is checked against every ISO-2022-JP shop that may fall back to it.
    with pytest.raises(TemplateError, match="shop tea"):
        save_template(session, None, "shipping_notice", "pc", 0, "", "発送", "﨑", None)


def test_cc_and_reply_to_lists_reach_header_and_envelope(
    engine, session: Session, smtp_sink: SmtpSink
) -> None:  # noqa: ANN001
    shop = make_shop(session, "tea")
    set_shop_lists(session, "tea", reply_to="support@tea.example.jp, desk@例え.jp",
                   cc="cc1@tea.example.jp, cc2@x.example.jp", bcc="archive@tea.example.jp")  # fmt: skip
    smtp_sink.handler.reject["cc2@x.example.jp"] = "550 5.1.1 no such user"
    ids = queue(session, shop, JAPANESE[:1], "tea")
    session.commit()
    assert _send(engine, smtp_sink).sent == 1
    (captured,) = smtp_sink.messages
    assert captured.rcpt_tos == ["tea0@example.jp", "cc1@tea.example.jp", "archive@tea.example.jp"]
    msg = captured.message
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["cc1@tea.example.jp", "cc2@x.example.jp"]
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == [
        "support@tea.example.jp",
        "desk@xn--r8jz45g.jp",
    ]
    assert msg["Bcc"] is None
    session.expire_all()
    mail = session.get(Mail, ids[0])
    assert mail.status == "sent"
    events = [e.detail for e in mail.events if e.event == "sent"]
    assert "cc2@x.example.jp" in events[0] and "550 5.1.1" in events[0]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("cc", ",".join(["a@x.jp"] * 143) + ",b@x.jp", "longer than 1000"),
        ("cc", "a@x.jp\r\nBcc: victim@evil.example", "a@x.jp"),
        ("reply_to", "a@x.jp; b@x.jp", "commas, not semicolons"),
        ("reply_to", "Shop <a@x.jp>", "Shop <a@x.jp>"),
        ("bcc", "ok@x.jp, bad..one@x.jp", "bad..one@x.jp"),
        ("reply_to", " , ", "an address is required"),
    ],
)
def test_list_settings_are_checked_naming_field_and_value(
    session: Session, field: str, value: str, problem: str
) -> None:
    make_shop(session, "tea")
    with pytest.raises(DeliverabilitySettingError) as info:
        set_shop_lists(session, "tea", **{field: value})
    assert f"shop tea: {field}: " in str(info.value) and problem in str(info.value)


def test_shops_cli_sets_and_refuses_deliverability_settings(
    engine, session: Session, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    from automail.cli import main

    monkeypatch.setenv("AIRFLOW_CONN_TEA_DKIM", dkim_key().conn_json("tea.example.jp"))
    make_shop(session, "tea")
    session.commit()
    assert main(["shops", "set-dkim", "tea", "--conn", "tea_dkim"]) == 0
    assert "tea: dkim=tea_dkim" in capsys.readouterr().out
    assert main(["shops", "set-dkim", "tea", "--conn", "nope_dkim"]) == 2
    assert "DKIM connection 'nope_dkim'" in capsys.readouterr().err
    assert main(["shops", "set-charset", "tea", "iso-2022-jp"]) == 0
    rc = main(["shops", "set-lists", "tea", "--cc", "a@x.jp, b..c@x.jp"])
    assert rc == 2 and "cc: address 'b..c@x.jp'" in capsys.readouterr().err
    assert (
        main(["shops", "set-lists", "tea", "--reply-to", "a@x.jp, b@x.jp", "--cc", "c@x.jp"]) == 0
    )
    capsys.readouterr()
    assert main(["shops", "list"]) == 0
    out = capsys.readouterr().out
    assert "dkim=tea_dkim charset=iso-2022-jp reply_to=a@x.jp, b@x.jp cc=c@x.jp" in out
    session.expire_all()
    shop = session.scalar(select(Shop).where(Shop.code == "tea"))
    assert (shop.dkim_conn_id, shop.charset, shop.cc) == ("tea_dkim", "iso-2022-jp", "c@x.jp")
