"""The loopback relay simulator is an honest peer: verified STARTTLS, AUTH, PIPELINING
advertised, and the latency proxy really costs one delay per direction."""

from __future__ import annotations

import smtplib
import ssl
import time
from pathlib import Path

import pytest

from automail.relay_sim import LatencyProxy, RelaySim, make_test_ca


@pytest.fixture
def ca(tmp_path: Path):  # noqa: ANN201
    return make_test_ca(tmp_path / "tls")


def _client(port: int, cafile: Path) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.starttls(context=ssl.create_default_context(cafile=str(cafile)))
    return s


def test_relay_wants_tls_and_auth_and_offers_pipelining(ca) -> None:  # noqa: ANN001
    with RelaySim(ca) as relay:
        plain = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
        plain.ehlo()
        code, _ = plain.mail("a@example.jp")
        assert code == 530  # STARTTLS required before anything
        plain.close()

        s = _client(relay.port, ca.ca_file)
        s.ehlo()
        assert s.has_extn("pipelining") and s.has_extn("auth")
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            s.login("relay-user", "wrong")
        assert refused.value.smtp_code == 535
        s.close()

        s = _client(relay.port, ca.ca_file)
        s.login("relay-user", "relay-password")
        s.sendmail("a@example.jp", ["b@example.jp"], b"Subject: t\r\n\r\nhi\r\n")
        s.quit()
        assert [m.rcpt_tos for m in relay.messages] == [["b@example.jp"]]
        assert relay.handler.logins == 1


def test_relay_certificate_is_verified_not_trusted_blindly(ca) -> None:  # noqa: ANN001
    with RelaySim(ca) as relay:
        s = smtplib.SMTP("127.0.0.1", relay.port, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            s.starttls(context=ssl.create_default_context())  # system CAs only
        s.close()


def test_latency_proxy_adds_the_round_trip(ca) -> None:  # noqa: ANN001
    with RelaySim(ca) as relay, LatencyProxy(relay.port, delay=0.05) as proxy:
        s = smtplib.SMTP("127.0.0.1", proxy.port, timeout=10)
        started = time.perf_counter()
        s.noop()
        rtt = time.perf_counter() - started
        s.close()
    assert rtt >= 0.1  # 50 ms each way
