"""Sending through real relays (H1, H2): each shop's mails reach only its relay; TLS is
verified and AUTH checked, and a relay that fails either is named, never bypassed;
PIPELINING transactions keep per-recipient outcomes; relay slots bound connections."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.db import session_factory
from automail.models import Mail, SendAttempt, Shop
from automail.relay_sim import RelaySim, make_test_ca
from automail.relays import RelaySettingError, mask_addresses, set_shop_relay
from automail.sample_data import make_shop
from automail.sending import run_send_cycle
from automail.sending.batch import _pinned_session
from automail.sending.relay_slots import release_slots, take_slots
from automail.sending.smtp import RelayConfigError, RelayConfigs, SmtpConfig
from automail.smtp_sink import SmtpSink

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def _relay_conn(relay: RelaySim, ca_file: Path, conn_id: str, **extra: object) -> SmtpConfig:
    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": relay.port,
        "login": relay.login,
        "password": relay.password,
        "extra": {"disable_ssl": True, "ca_file": str(ca_file), "timeout": 10, **extra},
    }
    return SmtpConfig.from_uri_or_json(json.dumps(conn), conn_id)


def _queue(session: Session, shop: Shop, n: int, tag: str) -> list[int]:
    mails = [
        Mail(
            shop_id=shop.id,
            kind="order_confirmation",
            source_key=f"{tag}:{i}",
            to_address=f"{tag}{i}@example.jp",
            from_address=shop.from_address,
            reply_to=shop.reply_to,
            subject=f"ご注文ありがとうございます {i}",
            body_text=f"{tag} {i} 様\n.\n..先頭のピリオド\n",
        )
        for i in range(n)
    ]
    session.add_all(mails)
    session.flush()
    return [m.id for m in mails]


@pytest.fixture
def ca(tmp_path: Path):  # noqa: ANN201
    return make_test_ca(tmp_path / "tls")


def test_each_shop_reaches_only_its_own_relay(
    engine, session: Session, smtp_sink: SmtpSink, ca
) -> None:  # noqa: ANN001, E501
    tea = make_shop(session, "tea")
    rice = make_shop(session, "rice", name="米の田中屋")
    set_shop_relay(session, "rice", "automail_smtp_rice", "rakuten")
    tea_ids = _queue(session, tea, 30, "tea")
    rice_ids = _queue(session, rice, 50, "rice")
    settings.put(session, "send_batch_size", 20)
    settings.put(session, "send_commit_group", 5)
    session.commit()
    with RelaySim(ca) as relay:
        configs = {
            "automail_smtp": SmtpConfig(host="127.0.0.1", port=smtp_sink.port, timeout=10),
            "automail_smtp_rice": _relay_conn(relay, ca.ca_file, "automail_smtp_rice"),
        }
        summary = run_send_cycle(
            session_factory(engine), RelayConfigs(read=configs.__getitem__), "two-relays", NOW
        )
        assert summary.sent == 80
        assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == sorted(
            f"tea{i}@example.jp" for i in range(30)
        )
        assert sorted(m.rcpt_tos[0] for m in relay.messages) == sorted(
            f"rice{i}@example.jp" for i in range(50)
        )
        # PostgreSQL batches open several connections (lanes), each TLS + AUTH.
        lanes_expected = 1 if engine.dialect.name == "sqlite" else 2
        assert relay.handler.logins >= lanes_expected
        assert "250-PIPELINING" in relay.handler.ehlo_lines
        body = relay.messages[0].message.get_content().replace("\r\n", "\n")
        assert "\n.\n..先頭のピリオド" in body  # dot-stuffing survived the pipelined DATA
    session.expire_all()
    assert set(session.scalars(select(Mail.status).where(Mail.id.in_(tea_ids + rice_ids)))) == {
        "sent"
    }


@pytest.mark.parametrize("failure", ["untrusted_ca", "wrong_password", "no_starttls"])
def test_tls_or_auth_failure_names_the_relay_and_never_falls_back(
    engine, session: Session, ca, tmp_path: Path, smtp_sink: SmtpSink, failure: str
) -> None:  # noqa: ANN001
    shop = make_shop(session)
    ids = _queue(session, shop, 3, "fail")
    settings.put(session, "max_retries", 1)
    settings.put(session, "retry_backoff_seconds", [60])
    session.commit()
    other_ca = make_test_ca(tmp_path / "other")
    with RelaySim(ca) as relay:
        if failure == "untrusted_ca":
            cfg = _relay_conn(relay, other_ca.ca_file, "automail_smtp")
        elif failure == "wrong_password":
            cfg = _relay_conn(relay, ca.ca_file, "automail_smtp")
            cfg = SmtpConfig(**{**cfg.__dict__, "password": "wrong"})
        else:  # a plaintext server where STARTTLS is required: no plaintext fallback
            cfg = SmtpConfig(host="127.0.0.1", port=smtp_sink.port, use_starttls=True, timeout=5)
        factory = session_factory(engine)
        first = run_send_cycle(factory, cfg, "tls-1", NOW)
        second = run_send_cycle(factory, cfg, "tls-2", NOW + timedelta(minutes=2))
        assert relay.messages == [] and smtp_sink.messages == []
    assert (first.retry_scheduled, second.failed) == (3, 3)
    session.expire_all()
    errors = session.scalars(select(Mail.last_error).where(Mail.id.in_(ids))).all()
    stage = {"untrusted_ca": "TLS", "wrong_password": "AUTH", "no_starttls": "TLS"}[failure]
    for error in errors:
        assert "gave up after 2 attempts" in error
        assert "'automail_smtp'" in error and f"{stage}" in error


def test_pipelined_refusal_fails_that_mail_only(engine, session: Session, ca) -> None:  # noqa: ANN001
    shop = make_shop(session)
    ids = _queue(session, shop, 4, "pipe")
    session.commit()
    with RelaySim(ca) as relay:
        relay.handler.reject["pipe1@example.jp"] = "550 5.1.1 <pipe1@example.jp>: user unknown"
        summary = run_send_cycle(
            session_factory(engine), _relay_conn(relay, ca.ca_file, "automail_smtp"), "p", NOW
        )
        assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
            "pipe0@example.jp",
            "pipe2@example.jp",
            "pipe3@example.jp",
        ]
    assert (summary.sent, summary.failed) == (3, 1)
    session.expire_all()
    refused = session.scalar(select(Mail).where(Mail.id == ids[1]))
    assert refused.status == "error" and "RCPT TO: 550" in refused.last_error
    attempt = session.scalar(select(SendAttempt).where(SendAttempt.mail_id == ids[1]))
    assert (attempt.outcome, attempt.smtp_code, attempt.enhanced_code) == (
        "perm_fail",
        550,
        "5.1.1",
    )


def test_connection_is_read_as_the_smtp_provider_reads_it(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("x")
    cfg = SmtpConfig.from_uri_or_json(
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "relay.example.jp",
                "port": 587,
                "login": "shop-id",
                "password": "p@ss/word",
                "extra": {"disable_ssl": True, "ca_file": str(ca_file), "connections": 8},
            }
        ),
        "automail_smtp_rice",
    )
    assert (cfg.host, cfg.port, cfg.login, cfg.password) == (
        "relay.example.jp", 587, "shop-id", "p@ss/word"
    )  # fmt: skip
    assert cfg.use_starttls and not cfg.use_ssl and cfg.verify and cfg.connections == 8
    uri = SmtpConfig.from_uri_or_json("smtp://u:p%40w@relay.example.jp", "x")
    assert uri.use_ssl and uri.port == 465 and uri.password == "p@w"  # provider default: SSL
    for bad, named in [
        ("smtp://h?disable_tls=false", "disable_tls"),  # the provider would read it as true
        ('{"conn_type": "smtp", "host": "h", "extra": {"ca_file": "/nope.pem"}}', "ca_file"),
        ('{"conn_type": "smtp", "host": "h", "extra": {"connections": 0}}', "connections"),
        ('{"conn_type": "smtp", "host": "h", "extra": {"ssl_context": "weird"}}', "ssl_context"),
        ('{"conn_type": "smtp", "host": "h"', "cannot parse"),
    ]:
        with pytest.raises(RelayConfigError, match=named) as err:
            SmtpConfig.from_uri_or_json(bad, "automail_smtp_x")
        assert "automail_smtp_x" in str(err.value)


def test_rakuten_mask_address_is_refused_when_set(session: Session) -> None:
    make_shop(session, "rice", from_address="rice-shop@shop.rakuten.co.jp")
    with pytest.raises(RelaySettingError, match=r"from_address 'rice-shop@shop\.rakuten\.co\.jp'"):
        set_shop_relay(session, "rice", "automail_smtp_rice", "rakuten")
    shop = session.scalar(select(Shop).where(Shop.code == "rice"))
    assert shop.smtp_conn_id is None and shop.marketplace is None  # nothing half-applied
    shop.from_address = "info@rice.example.jp"
    shop.bcc = "ok@rice.example.jp, orders@SHOP.rakuten.co.jp"
    assert any("bcc 'orders@SHOP.rakuten.co.jp'" in p for p in mask_addresses(shop)) is False
    shop.marketplace = "rakuten"
    assert any("bcc 'orders@SHOP.rakuten.co.jp'" in p for p in mask_addresses(shop))
    shop.marketplace = None
    shop.bcc = None
    assert set_shop_relay(session, "rice", "automail_smtp_rice", "rakuten").relay == (
        "automail_smtp_rice"
    )
    with pytest.raises(RelaySettingError, match="not an Airflow connection id"):
        set_shop_relay(session, "rice", "bad id;drop", None)


def test_relay_slots_bound_connections_across_batches(engine) -> None:  # noqa: ANN001
    if engine.dialect.name != "postgresql":
        pytest.skip("cross-process slots are PostgreSQL advisory locks")
    factory = session_factory(engine)
    first, second = _pinned_session(factory), _pinned_session(factory)  # one connection each
    try:
        assert take_slots(first, "automail_smtp_rice", 3, 4, 0) == 3
        assert take_slots(second, "automail_smtp_rice", 3, 4, 0) == 1  # only one left
        assert take_slots(second, "automail_smtp_other", 2, 4, 0) == 2  # another relay
        release_slots(first)
        assert take_slots(first, "automail_smtp_rice", 4, 4, 0) == 3
    finally:
        release_slots(first)
        release_slots(second)
        for s in (first, second):
            bind = s.get_bind()
            s.close()
            bind.close()


def test_shops_cli_sets_and_refuses_relays(
    engine, session: Session, capsys: pytest.CaptureFixture
) -> None:  # noqa: ANN001
    from automail.cli import main

    make_shop(session, "rice", reply_to="ask@shop.rakuten.co.jp")
    session.commit()
    assert main(["shops", "set-relay", "rice", "--relay", "automail_smtp_rice"]) == 0
    assert "rice: relay=automail_smtp_rice marketplace=-" in capsys.readouterr().out
    rc = main(["shops", "set-relay", "rice", "--relay", "automail_smtp_rice",
               "--marketplace", "rakuten"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "reply_to 'ask@shop.rakuten.co.jp' is a rakuten mask address" in err
    assert main(["shops", "list"]) == 0
    assert "rice: relay=automail_smtp_rice marketplace=-" in capsys.readouterr().out
