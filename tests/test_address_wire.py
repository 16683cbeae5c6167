"""What an address must be to be sent, and how IDN domains go out (issue 12 item 4).

One rule (`addresses.wire_address`) for RCPT TO, MAIL FROM and the address headers:
an internationalised domain goes out as A-labels (IDNA 2008, as email-validator gives
it); an address that cannot be written as it is — angle brackets, spaces, control
characters, no local part, a non-ASCII local part (SMTPUTF8 is never used) — is
refused for that mail only, naming the field, whether or not the shop's address check
is on. End to end through the real SMTP sink on both stores.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from automail.addresses import AddressError, check_address, wire_address
from automail.db import session_factory
from automail.models import Mail, Shop
from automail.sample_data import make_shop
from automail.sending import SmtpConfig, send_batch
from automail.sending.claim import claim_ids
from automail.smtp_sink import SmtpSink

_seq = itertools.count()


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        ("hanako@example.jp", "hanako@example.jp"),
        ("hanako@例え.jp", "hanako@xn--r8jz45g.jp"),
        ("taro@日本語.jp", "taro@xn--wgv71a119e.jp"),
        ("taro@ＥＸＡＭＰＬＥ.jp", "taro@example.jp"),  # UTS-46 mapping, as the check does
        ("taro..yamada.@docomo.ne.jp", "taro..yamada.@docomo.ne.jp"),  # legacy: check off
        ("a+tag@sub.example.co.jp", "a+tag@sub.example.co.jp"),
    ],
)
def test_wire_form(address: str, wire: str) -> None:
    assert wire_address(address) == wire


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("<mallory@example.jp>", "cannot be sent before the @"),
        ("mallory@example.jp>", "cannot be sent after the @"),
        ("@x.com", "nothing before the @"),
        ("mallory@", "nothing after the @"),
        ("ma llory@example.jp", "spaces"),
        ("mallory@example.jp\u2028", "control character"),
        ("mal\x0blory@example.jp", "control character"),
        ("山田@example.jp", "non-ASCII characters before the @ (SMTPUTF8"),
        ('"quoted"@example.jp', "cannot be sent before the @"),
        ("a@b@example.jp", "more than one @"),
        ("mallory@[127.0.0.1]", "cannot be sent after the @"),
        ("hanako@例え..jp", "not a valid IDN"),
        ("", "empty"),
    ],
)
def test_unusable_addresses_are_refused_naming_the_address(address: str, words: str) -> None:
    with pytest.raises(AddressError) as err:
        wire_address(address)
    assert words in str(err.value)
    assert repr(address) in str(err.value)


ADDRESSY = st.lists(
    st.sampled_from(list("ab.-_+@例えＡ山 <>\"'\u2028\x00") + ["xn--", ".jp", "@x.jp"]),
    max_size=12,
).map("".join)
IDN = st.builds(
    "{}@{}.{}".format,
    st.text("abc.+", min_size=1, max_size=5),
    st.text("例え山田ａｂ-ß", min_size=1, max_size=6),
    st.sampled_from(["jp", "co.jp", "みんな"]),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(address=ADDRESSY | IDN | st.emails())
def test_what_the_address_check_accepts_can_be_sent(address: str) -> None:
    """The shop's check never accepts an address the wire rule refuses (one rule)."""
    if check_address(address) is None:
        wire = wire_address(address)
        assert wire.isascii() and check_address(wire) is None


def _insert(session: Session, shop: Shop, to: str) -> int:
    mail = Mail(
        shop_id=shop.id,
        kind="order_confirmation",
        source_key=f"idn:{next(_seq)}",
        to_address=to,
        from_address=shop.from_address,
        from_name=shop.from_name,
        reply_to=shop.reply_to,
        bcc=shop.bcc,
        subject="【お茶の山田園】ご注文ありがとうございます",
        body_text="山田 花子 様\nご注文を承りました。",
    )
    session.add(mail)
    session.flush()
    return mail.id


def _send(engine: Engine, session: Session, ids: list[int], sink: SmtpSink, tag: str):  # noqa: ANN202
    claimed, _ = claim_ids(session, ids, tag, datetime.now(UTC), 600, "t")
    session.commit()
    assert sorted(claimed) == sorted(ids)
    cfg = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=5)
    return send_batch(session_factory(engine), ids, tag, cfg, "test")


@pytest.mark.parametrize("address_check", [True, False], ids=["check on", "check off"])
def test_idn_domains_go_out_as_a_labels_and_nothing_is_held_in_doubt(
    engine: Engine, session: Session, smtp_sink: SmtpSink, address_check: bool
) -> None:
    shop = make_shop(session, address_check=address_check)
    bcc_shop = make_shop(session, "bcc", bcc="archive@例え.jp")
    ids = [
        _insert(session, shop, "a@example.jp"),
        _insert(session, shop, "hanako@例え.jp"),
        _insert(session, shop, "山田@example.jp"),  # SMTPUTF8 would be needed: refused
        _insert(session, bcc_shop, "taro@ＥＸＡＭＰＬＥ.jp"),
        _insert(session, shop, "b@example.jp"),
    ]
    session.commit()

    summary = _send(engine, session, ids, smtp_sink, f"idn-{address_check}")

    assert (summary.sent, summary.refused, summary.in_doubt) == (4, 1, 0), summary
    got = {m.message["X-Automail-Id"]: m for m in smtp_sink.messages}
    idn = got[str(ids[1])]
    assert idn.rcpt_tos == ["hanako@xn--r8jz45g.jp"]
    assert idn.message["To"].addresses[0].addr_spec == "hanako@xn--r8jz45g.jp"
    assert idn.data.split(b"\r\n\r\n")[0].isascii()
    mapped = got[str(ids[3])]
    assert mapped.rcpt_tos == ["taro@example.jp", "archive@xn--r8jz45g.jp"]
    assert mapped.message["Bcc"] is None
    session.expire_all()
    statuses = {i: session.get(Mail, i).status for i in ids}
    assert list(statuses.values()) == ["sent", "sent", "error", "sent", "sent"]
    refused = session.get(Mail, ids[2])
    assert "to_address" in refused.last_error and "'山田@example.jp'" in refused.last_error
    assert "SMTPUTF8" in refused.last_error or "invalid" in refused.last_error
