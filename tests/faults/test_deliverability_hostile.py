"""Hostile input for the deliverability options of seed 002 (issue 14).

- Reply-To / Cc / BCC lists: over 1,000 characters, CR/LF and other controls, RFC 2047
  encoded words hiding a line break, 500 addresses, angle brackets and display names,
  semicolons, empty items, IDN domains. At settings time each is refused naming the
  field and the value, or accepted; a list that reaches the store anyway (written
  around the settings, e.g. an old row) makes its mail an error naming the field at
  send time. Every accepted list arrives through the real sink as exactly its
  addresses: Cc/Reply-To headers parse back to the list, RCPT TO is To + Cc + BCC,
  nothing else.
- Text under ISO-2022-JP mixing JIS X 0208 with ①, ㈱, 髙, 﨑, emoji, half-width
  katakana, ～ (U+FF5E): a mail is either refused naming the field and every offending
  character, or sent and decoded back to exactly its source text.
- Broken DKIM connections (missing, unparsable, empty, garbage PEM, truncated PEM, an
  EC or Ed25519 key, a passphrase-protected key, no selector or domain) next
  to a shop with a good key: the broken shop's mails are errors naming the connection,
  the good shop's all arrive with a signature dkimpy verifies.

Counters (must be 0, asserted): `dkim_unsigned_sent` (messages of a DKIM shop received
without a valid signature), `charset_replacement_chars_sent` (received text that is
not its source: a `?` or U+FFFD in place of a character), `address_list_injections_delivered`
(received Cc / Reply-To / RCPT sets that differ from the stored list). Every probe
counts in `inputs`.
Knob: FAULTS_EXAMPLES_SCALE (default 1.0) multiplies the random charset examples.
"""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from automail.addresses import split_address_list, wire_address
from automail.db import session_factory
from automail.deliverability import (
    DeliverabilitySettingError,
    set_shop_charset,
    set_shop_dkim,
    set_shop_lists,
)
from automail.models import Mail, Shop
from automail.sample_data import make_shop
from automail.sending import run_send_cycle
from automail.sending.smtp import SmtpConfig
from automail.smtp_sink import SmtpSink
from tests.deliverability_helpers import dkim_key, queue

from .conftest import FaultTotals

SCALE = float(os.environ.get("FAULTS_EXAMPLES_SCALE", "1") or 1)
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
HOSTILE_LISTS = [
    ",".join(f"u{i}@x.jp" for i in range(111)) + ",toolong@x.jp",  # 1,001+ characters
    "a" * 990 + "@x.jp",  # one address, over the limit
    ",".join(f"u{i}@x.jp" for i in range(500)),  # 500 addresses
    "a@x.jp\r\nBcc: victim@evil.example",
    "a@x.jp\nb@x.jp",
    "a@x.jp,\x00b@x.jp",
    "a@x.jp,\u2028b@x.jp",
    "=?utf-8?b?YUB4LmpwDQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=",  # a@x.jp CRLF Bcc: …
    "=?utf-8?q?a@x.jp=0D=0ABcc:victim@evil.example?=, b@x.jp",
    "Shop <a@x.jp>",
    "<a@x.jp>",
    '"Yamada, Hanako" <a@x.jp>',
    "a@x.jp; b@x.jp",
    "a@x.jp b@x.jp",
    "a@x.jp,,b@x.jp",
    ",a@x.jp,",
    "a@x.jp, a..b@x.jp",
    "山田@x.jp",
    "a@例え.jp, b@x.jp",
    ",".join(f"p{i}@x.jp" for i in range(140)),  # 140 addresses, 993 characters: allowed
]
JIS_OK = "あいうアイウ漢字山田花子〜ー「」、。ABCabc123 "
NON_JIS = "①㈱髙﨑😀ｶﾀｶﾅ～"


def _send(engine: Engine, smtp_sink: SmtpSink, run: str):  # noqa: ANN202
    cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=10)
    return run_send_cycle(session_factory(engine), cfg, run, NOW)


def test_hostile_reply_to_and_cc_lists(
    engine: Engine, session: Session, smtp_sink: SmtpSink, fault_totals: FaultTotals
) -> None:
    shop = make_shop(session, "tea")
    accepted: dict[str, tuple[int, str, str]] = {}  # field:value -> (mail id, field, value)
    refused_at_send: list[tuple[int, str, str]] = []
    for n, value in enumerate(HOSTILE_LISTS):
        for field in ("cc", "reply_to"):
            fault_totals.inputs += 1
            code = f"s{n}{field[0]}"
            s = make_shop(session, code)
            try:
                set_shop_lists(session, code, **{field: value})
            except DeliverabilitySettingError as exc:
                assert f"{field}: " in str(exc), exc  # names the field…
                shown = value[:60] if len(value) > 1000 else None
                assert shown is None or shown in str(exc) or repr(shown)[1:-1][:40] in str(exc)
                # …and a list written around the settings is an error at send time.
                too_long = field == "reply_to" and len(value) > 1000  # the column's limit
                if too_long or ("\x00" in value and engine.dialect.name == "postgresql"):
                    continue  # the store itself cannot hold it: nothing could be sent
                setattr(s, field, value)
                session.flush()
                (mid,) = queue(session, s, [("件名", "本文")], code)
                refused_at_send.append((mid, field, value))
                continue
            (mid,) = queue(session, s, [("件名", "本文")], code)
            accepted[f"{field}:{value}"] = (mid, field, value)
    ok = queue(session, shop, [("件名", "本文")] * 3, "good")
    session.commit()
    _send(engine, smtp_sink, "hostile-lists")
    by_to = {m.rcpt_tos[0]: m for m in smtp_sink.messages}
    injected = errors = 0
    for mid, field, value in [*accepted.values(), *refused_at_send]:
        mail = session.get(Mail, mid)
        session.refresh(mail)
        if mail.status == "error":
            # Only a list the settings refused may fail; the error names the field.
            assert (mid, field, value) in refused_at_send, (value, mail.last_error)
            assert f"{field} " in mail.last_error and mail.to_address not in by_to
            errors += 1
            continue
        # Sent (a list the settings accepted, or one only their strict address check
        # refuses, e.g. a..b@ legacy carrier addresses): exactly the stored list.
        assert mail.status == "sent", (value, mail.last_error)
        captured = by_to[mail.to_address]
        wires = [wire_address(a) for a in split_address_list(value)]
        msg = captured.message
        header = {"cc": "Cc", "reply_to": "Reply-To"}[field]
        got = [a.addr_spec for a in msg[header].addresses] if msg[header] else []
        rcpts = captured.rcpt_tos[1:]
        expected_rcpts = wires if field == "cc" else []
        if got != wires or rcpts != expected_rcpts or msg["Bcc"] is not None:
            injected += 1
    for mid in ok:
        assert session.get(Mail, mid).status == "sent"
    assert accepted and errors  # both paths exercised
    fault_totals.count("address_list_injections_delivered", injected)
    fault_totals.lines.append(
        f"deliverability lists: {len(accepted)} accepted and delivered as stored, "
        f"{len(refused_at_send)} refused by the settings, {errors} of them refused at send"
    )
    assert injected == 0


def test_non_jis_text_under_iso_2022_jp(
    engine: Engine, session: Session, smtp_sink: SmtpSink, fault_totals: FaultTotals
) -> None:
    shop = make_shop(session, "tea")
    set_shop_charset(session, "tea", "iso-2022-jp")
    rng = random.Random(14)
    texts = []
    for _ in range(int(60 * SCALE)):
        alphabet = JIS_OK + (NON_JIS if rng.random() < 0.5 else "")
        subject = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))).strip() or "x"
        body = "\n".join(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
            for _ in range(rng.randint(1, 6))
        )
        texts.append((subject, body + "\n"))
    texts += [(c, "本文\n") for c in NON_JIS] + [("件名", f"本文 {c}\n") for c in NON_JIS]
    fault_totals.inputs += len(texts)
    ids = queue(session, shop, texts, "jis")
    session.commit()
    _send(engine, smtp_sink, "iso-2022-jp")
    received = {m.rcpt_tos[0]: m for m in smtp_sink.messages}
    replaced = 0
    for mid, (subject, body) in zip(ids, texts, strict=True):
        mail = session.get(Mail, mid)
        session.refresh(mail)
        bad = [c for c in NON_JIS if c in subject + body]
        if bad:
            assert mail.status == "error" and mail.to_address not in received
            field = "subject" if any(c in subject for c in bad) else "body_text"
            assert f"{field} " in mail.last_error and "iso-2022-jp" in mail.last_error
            source = subject if field == "subject" else body
            assert all(repr(c) in mail.last_error for c in NON_JIS if c in source)
            continue
        assert mail.status == "sent", mail.last_error
        msg = received[mail.to_address].message
        text = msg.get_content().replace("\r\n", "\n")
        intact = str(msg["Subject"]) == subject and text == body
        if not intact or "\ufffd" in text or text.count("?") != body.count("?"):
            replaced += 1
    fault_totals.count("charset_replacement_chars_sent", replaced)
    fault_totals.lines.append(f"iso-2022-jp: {len(texts)} texts, {len(received)} sent intact")
    assert replaced == 0


def _pem(key, encryption=None) -> str:  # noqa: ANN001
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    ).decode()


def _broken_connections() -> dict[str, str | None]:
    good = dkim_key().pem
    conn = {"conn_type": "generic", "login": "s1", "host": "tea.example.jp"}
    return {
        "missing": None,
        "unparsable": '{"conn_type": "generic", "login": ',
        "empty": json.dumps({**conn, "password": ""}),
        "garbage": json.dumps(
            {**conn, "password": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}
        ),  # noqa: E501
        "truncated": json.dumps({**conn, "password": good[: len(good) // 2]}),
        "ec": json.dumps({**conn, "password": _pem(ec.generate_private_key(ec.SECP256R1()))}),
        "ed25519": json.dumps({**conn, "password": _pem(ed25519.Ed25519PrivateKey.generate())}),
        "encrypted": json.dumps(
            {
                **conn,
                "password": _pem(
                    rsa.generate_private_key(65537, 2048),
                    serialization.BestAvailableEncryption(b"secret"),
                ),
            }
        ),  # fmt: skip
        "no_selector": json.dumps(
            {"conn_type": "generic", "host": "tea.example.jp", "password": good}
        ),  # noqa: E501
        "no_domain": json.dumps({"conn_type": "generic", "login": "s1", "password": good}),
    }


def test_broken_dkim_keys_never_send_unsigned(
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    fault_totals: FaultTotals,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = dkim_key()
    monkeypatch.setenv("AIRFLOW_CONN_GOOD_DKIM", key.conn_json("good.example.jp"))
    good = make_shop(session, "good")
    set_shop_dkim(session, "good", "good_dkim")
    good_ids = queue(session, good, [("件名", "本文")] * 5, "good")
    broken: dict[int, str] = {}
    for name, value in _broken_connections().items():
        fault_totals.inputs += 1
        conn_id = f"dkim_{name}"
        if value is not None:
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        shop = make_shop(session, name.replace("_", "-"))
        with pytest.raises(DeliverabilitySettingError, match=repr(conn_id)):
            set_shop_dkim(session, shop.code, conn_id)  # refused at settings time…
        session.execute(update(Shop).where(Shop.id == shop.id).values(dkim_conn_id=conn_id))
        for mid in queue(session, shop, [("件名", "本文")] * 2, name):  # …and at send time
            broken[mid] = conn_id
    session.commit()
    _send(engine, smtp_sink, "dkim-broken")
    dkim_shops = {good.id} | set(
        session.scalars(select(Mail.shop_id).where(Mail.id.in_(list(broken))))
    )
    received = {m.rcpt_tos[0]: m for m in smtp_sink.messages}
    unsigned = 0
    for mail in session.scalars(select(Mail).where(Mail.shop_id.in_(dkim_shops))):
        session.refresh(mail)
        captured = received.get(mail.to_address)
        if captured is not None and not dkim.verify(
            captured.data, dnsfunc=key.dnsfunc("good.example.jp")
        ):
            unsigned += 1
        if mail.id in broken:
            assert mail.status == "error" and captured is None
            assert f"DKIM connection {broken[mail.id]!r}" in mail.last_error, mail.last_error
    assert all(session.get(Mail, i).status == "sent" for i in good_ids)
    fault_totals.count("dkim_unsigned_sent", unsigned)
    fault_totals.mails += len(good_ids) + len(broken)
    fault_totals.lines.append(
        f"dkim: {len(broken)} mails of {len(broken) // 2} broken keys refused, "
        f"{len(good_ids)} signed and verified"
    )
    assert unsigned == 0
