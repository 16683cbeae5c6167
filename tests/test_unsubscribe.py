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


# Issue 13 item 3: an opt-out is never lost, also while another writer holds SQLite.


def _hold_write_lock(store_url: str):  # noqa: ANN202
    """A second connection holding SQLite's write lock (as a creation run or backfill does)."""
    import sqlite3

    path = store_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE settings SET key = key WHERE 1 = 0")
    return conn


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_unsubscribe_waits_for_a_writer_then_applies(session, engine, store_url) -> None:  # noqa: ANN001
    import threading

    shop = make_shop(session)
    cust = make_customer(session, shop, "wait@example.jp")
    session.commit()
    lock = _hold_write_lock(store_url)
    threading.Timer(0.5, lock.commit).start()  # the other writer finishes within the wait
    client = TestClient(create_app(session_factory(engine), lock_wait_ms=30_000))
    r = client.post("/unsubscribe", data={"t": make_token(shop.id, cust.id)})
    assert r.status_code == 200 and "停止しました" in r.text
    assert _fresh(session, cust).marketing_opt_in is False
    lock.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_unsubscribe_under_a_held_lock_is_spooled_and_applied_by_the_next_run(
    session, engine, store_url, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    from automail.campaigns import tick, unsubscribe_spool

    spool = tmp_path / "spool" / "unsubscribe.jsonl"
    monkeypatch.setenv(unsubscribe_spool.ENV_PATH, str(spool))
    shop = make_shop(session)
    cust = make_customer(session, shop, "locked@example.jp")
    session.commit()
    lock = _hold_write_lock(store_url)
    try:
        client = TestClient(create_app(session_factory(engine), lock_wait_ms=200))
        r = client.post("/unsubscribe", data={"t": make_token(shop.id, cust.id)})
    finally:
        lock.rollback()
        lock.close()
    assert r.status_code == 202 and "受け付けました" in r.text  # told: received, applied soon
    assert unsubscribe_spool.pending_count(spool) == 1
    assert _fresh(session, cust).marketing_opt_in is True  # not yet: the store was locked
    with session_factory(engine).begin() as s:
        tick(s)  # the next newsletter run
    cust = _fresh(session, cust)
    assert cust.marketing_opt_in is False and cust.unsubscribed_at is not None
    assert unsubscribe_spool.pending_count(spool) == 0 and not list(spool.parent.iterdir())


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_unsubscribe_that_cannot_be_kept_says_so(
    session, engine, store_url, tmp_path, monkeypatch
) -> None:  # noqa: ANN001
    from automail.campaigns import unsubscribe_spool

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(unsubscribe_spool.ENV_PATH, str(blocker / "spool.jsonl"))  # cannot exist
    shop = make_shop(session)
    cust = make_customer(session, shop, "lost@example.jp")
    session.commit()
    lock = _hold_write_lock(store_url)
    try:
        client = TestClient(create_app(session_factory(engine), lock_wait_ms=200))
        r = client.post("/unsubscribe", data={"t": make_token(shop.id, cust.id)})
    finally:
        lock.rollback()
        lock.close()
    assert r.status_code == 503 and "もう一度お試しください" in r.text


def test_non_ascii_token_is_a_clear_400(client: TestClient) -> None:
    for token in ("v1.2.23.é", "v1.２.23.abc", "v1.2.23.abc\u2028"):
        assert client.get("/unsubscribe", params={"t": token}).status_code == 400
        assert client.post("/unsubscribe", data={"t": token}).status_code == 400
