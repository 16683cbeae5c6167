"""The per-mail signed token that ties a bounce to its mail (automail.bounce_links)."""

from __future__ import annotations

import pytest

from automail.bounce_links import Claim, MailSigner, message_id_claim, verp_claims
from automail.models import Mail
from automail.signing import MissingSecretKey

KEY = b"k" * 32


def test_a_token_is_bound_to_its_shop_and_mail_and_the_key() -> None:
    signer = MailSigner(KEY)
    token = signer.token(1, 42)
    assert len(token) == 20 and token == token.lower()
    assert signer.valid(1, 42, token) and signer.valid(1, 42, token.upper())  # relays lowercase
    assert not signer.valid(1, 43, token)  # replayed for another mail
    assert not signer.valid(2, 42, token)  # another shop's mail of the same id
    assert not MailSigner(b"x" * 32).valid(1, 42, token)  # another key
    assert not signer.valid(1, 42, token[:-1]) and not signer.valid(1, 42, None)


def test_return_path_and_message_id_carry_the_token_and_parse_back() -> None:
    signer = MailSigner(KEY)
    mail = Mail(id=42, shop_id=1, from_address="shop@tea.example.jp", return_path="b@tea.jp")
    token = signer.token(1, 42)
    assert signer.envelope_sender(mail) == f"b+42-{token}@tea.jp"
    assert (
        signer.message_id(mail, "tea", resend=2) == f"<automail.42-{token}.tea.r2@tea.example.jp>"
    )
    assert verp_claims(f"Bounces <b+42-{token}@tea.jp>, x+automail-7@y.jp") == [
        Claim(42, token, "verp"),
        Claim(7, None, "verp"),
    ]
    assert message_id_claim(f"<automail.42-{token}.tea@x>") == Claim(42, token, "message-id")
    assert message_id_claim("automail.42.tea@x") == Claim(42, None, "message-id")
    assert message_id_claim("<other.42@x>") is None
    mail.return_path = None
    assert signer.envelope_sender(mail) == "shop@tea.example.jp"  # links by Message-ID then
    with pytest.raises(ValueError, match="return_path 'nobody': not an address"):
        signer.return_path("nobody", 1, 42)


def test_no_key_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOMAIL_SECRET_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__DAGS_FOLDER", raising=False)
    with pytest.raises(MissingSecretKey, match="AUTOMAIL_SECRET_KEY"):
        MailSigner.load()
    with pytest.raises(MissingSecretKey):
        MailSigner().token(1, 1)
