"""The public unsubscribe link (C10): signed tokens, GET confirms, POST opts out,
forged or altered tokens change nothing. Runs the plugin's FastAPI app in TestClient."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from automail.campaigns.unsubscribe import (
    BadToken,
    MissingSecretKey,
    make_token,
    secret_key,
    verify_token,
)
from automail.campaigns.unsubscribe_web import create_app
from automail.db import session_factory
from automail.sample_data import make_customer, make_shop

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(engine) -> TestClient:  # noqa: ANN001
    return TestClient(create_app(session_factory(engine)))


def _fresh(session: Session, obj):  # noqa: ANN001, ANN202
    session.rollback()
    session.expire_all()
    session.refresh(obj)
    return obj


def test_token_round_trip_and_tampering() -> None:
    token = make_token(3, 41)
    assert verify_token(token) == (3, 41)
    head, sig = token.rsplit(".", 1)
    for forged in (
        "v1.3.42." + sig,  # another customer, same signature
        "v1.4.41." + sig,  # another shop
        head + "." + sig[:-2] + ("AA" if not sig.endswith("AA") else "BB"),
        make_token(3, 41, key=b"someone-elses-key-123"),
    ):
        with pytest.raises(BadToken) as err:
            verify_token(forged)
        assert err.value.status_code == 403
    for garbage in ("", "v1.3", "v2.3.41." + sig, "v1.x.41." + sig):
        with pytest.raises(BadToken) as err:
            verify_token(garbage)
        assert err.value.status_code == 400


def test_no_key_no_newsletter(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("AUTOMAIL_SECRET_KEY", raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__DAGS_FOLDER", raising=False)
    with pytest.raises(MissingSecretKey, match="AUTOMAIL_SECRET_KEY"):
        secret_key()


def test_get_confirms_and_post_unsubscribes(session: Session, client: TestClient) -> None:
    shop = make_shop(session)
    cust = make_customer(session, shop, "a@example.jp")
    session.commit()
    url = f"/unsubscribe?t={make_token(shop.id, cust.id)}"
    page = client.get(url)
    assert page.status_code == 200 and "配信を停止する" in page.text and "お茶の山田園" in page.text
    assert _fresh(session, cust).marketing_opt_in is True  # GET changes nothing
    done = client.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200 and "停止しました" in done.text
    cust = _fresh(session, cust)
    assert cust.marketing_opt_in is False and cust.unsubscribed_at is not None
    first = cust.unsubscribed_at
    again = client.post("/unsubscribe", data={"t": make_token(shop.id, cust.id)})  # the form
    assert again.status_code == 200
    assert _fresh(session, cust).unsubscribed_at == first  # idempotent
    assert "停止済み" in client.get(url).text


def test_forged_or_tampered_links_change_nothing(session: Session, client: TestClient) -> None:
    shop = make_shop(session)
    victim = make_customer(session, shop, "victim@example.jp")
    me = make_customer(session, shop, "me@example.jp")
    session.commit()
    mine = make_token(shop.id, me.id)
    sig = mine.rsplit(".", 1)[1]
    forged = f"v1.{shop.id}.{victim.id}.{sig}"
    for token, code in (
        (forged, 403),
        ("nonsense", 400),
        (f"v1.{shop.id}.{victim.id}", 400),
        (make_token(shop.id, 999999), 404),
    ):
        assert client.get(f"/unsubscribe?t={token}").status_code == code
        assert (
            client.post(
                f"/unsubscribe?t={token}", content=b"List-Unsubscribe=One-Click"
            ).status_code
            == code
        )
    assert "&lt;script&gt;" in client.get("/unsubscribe?t=<script>x").text  # escaped echo
    victim = _fresh(session, victim)
    assert victim.marketing_opt_in is True and victim.unsubscribed_at is None


def test_plugin_mounts_the_app_without_login() -> None:
    spec = importlib.util.spec_from_file_location(
        "automail_unsubscribe", REPO / "plugins" / "automail_unsubscribe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (entry,) = module.AutomailUnsubscribePlugin.fastapi_apps
    assert entry["url_prefix"] == "/automail-public"
    routes = {(r.path, m) for r in entry["app"].routes for m in getattr(r, "methods", ())}
    assert {("/unsubscribe", "GET"), ("/unsubscribe", "POST")} <= routes
