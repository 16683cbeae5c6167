"""End to end in headless Chromium against a real `airflow api-server` (simple auth
manager, this repo's plugins folder, the PostgreSQL store, a loopback SMTP sink):
log in, search, open a detail page, prune two pending mails, bulk send, copy-and-
resend with a new To, and see the message arrive. Also: anonymous and viewer
callers refused by the real server with real JWTs.

Set AUTOMAIL_UPDATE_SCREENSHOTS=1 to refresh docs/search.png and docs/detail.png.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from airflow_server import USERS, AirflowServer, running_airflow
from management_helpers import mail, shop

from automail.models import Mail, StaffAction

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    # One store is enough for the browser path (the domain tests cover both): the
    # production one. The server fixture is per module, so it starts once.
    pytest.mark.parametrize("store_url", ["postgres"], indirect=True),
]

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip(f"{CHROMIUM} not installed (required under CI)", allow_module_level=True)


@pytest.fixture(scope="module")
def sink() -> Iterator:
    from automail.smtp_sink import SmtpSink

    with SmtpSink() as s:
        yield s


@pytest.fixture(scope="module")
def server(store_url: str, sink, tmp_path_factory) -> Iterator[AirflowServer]:
    with running_airflow(tmp_path_factory.mktemp("airflow"), store_url, sink.port) as s:
        yield s


@pytest.fixture
def browser_page() -> Iterator:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="automail-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 860},
            )
            ctx.set_default_timeout(20_000)
            page = ctx.new_page()
            page.on("dialog", lambda d: d.accept())  # the delete confirm()
            yield page
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def fresh(session) -> None:
    session.rollback()
    session.expire_all()


def test_real_server_refuses_anonymous_and_viewer_actions(server, engine, session, sink):
    m = mail(session, shop(session))
    session.commit()
    base = f"{server.base_url}/automail"
    for path in ("/", "/api/mails", f"/api/mails/{m.id}", "/history", "/export.csv"):
        r = httpx.get(base + path)
        assert r.status_code == 401, path
        assert "hanako@example.jp" not in r.text
    anon = httpx.post(f"{base}/api/actions", json={"action": "delete", "ids": [m.id]})
    assert anon.status_code == 401
    viewer = {"Authorization": f"Bearer {server.token('viewer')}"}
    assert httpx.get(f"{base}/api/mails", headers=viewer).json()["total"] == 1
    denied = httpx.post(
        f"{base}/api/actions", json={"action": "delete", "ids": [m.id]}, headers=viewer
    )
    assert denied.status_code == 403
    forged = httpx.get(f"{base}/api/mails", headers={"Authorization": "Bearer x.y.z"})
    assert forged.status_code in (401, 403)
    fresh(session)
    assert session.get(Mail, m.id).status == "unsent"
    admin = {"Authorization": f"Bearer {server.token('admin')}"}
    plugins = httpx.get(f"{server.base_url}/api/v2/plugins", headers=admin).json()
    (ours,) = [p for p in plugins["plugins"] if p["name"] == "automail_ui"]
    assert ours["external_views"][0]["href"] == "/automail/"


def test_screen_end_to_end_in_chromium(server, engine, session, sink, browser_page, tmp_path):
    tea = shop(session, "tea")
    prune = [mail(session, tea, to=f"prune{i}@example.jp", body="不要な注文").id for i in (1, 2)]
    pending = mail(session, tea, to="pending@example.jp", body="ご注文ありがとうございます").id
    failed = mail(session, tea, status="error", to="failed@example.jp").id
    past = mail(
        session,
        tea,
        status="sent",
        kind="shipping_notice",
        to="old-address@example.jp",
        subject="商品発送のお知らせ",
        body="ご注文の商品を発送しました。追跡番号: 1234-5678",
        html="<h1>発送のお知らせ</h1><p>追跡番号: <b>1234-5678</b></p>",
    ).id
    session.commit()
    page = browser_page
    base = f"{server.base_url}/automail"
    user, (_, password) = "admin", USERS["admin"]

    # Log in through Airflow's own login form, then come to the screen.
    page.goto(f"{server.base_url}/auth/login?next={base}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    page.goto(f"{base}/")
    assert page.inner_text("#total") == "3"  # the default search: unsent mails

    # Search: all statuses, body substring -> the past shipping notice; open its detail.
    page.select_option("#f-status", "all")
    page.fill("#f-body", "1234-5678")
    page.click("#search-btn")
    assert page.inner_text("#total") == "1"
    page.click(f"tr[data-id='{past}'] a.detail-link")
    page.wait_for_selector("#headers")
    assert "old-address@example.jp" in page.inner_text("#headers")
    assert "追跡番号: 1234-5678" in page.inner_text("#body-text")
    assert page.get_attribute("#body-html", "sandbox") == ""

    # Prune two pending mails.
    page.goto(f"{base}/")
    for mail_id in prune:
        page.check(f"tr[data-id='{mail_id}'] input.pick")
    page.click("#bulk-delete")
    page.wait_for_selector("#notice")
    assert "2 of 2 mail(s) done" in page.inner_text("#notice")
    assert page.inner_text("#total") == "1"

    # Bulk send everything unsent or in error (select-all ON).
    page.goto(f"{base}/?status=all")
    page.click("#select-on")
    page.click("#bulk-send")
    page.wait_for_selector("#notice")
    assert "2 accepted by the SMTP server" in page.inner_text("#notice")
    assert sorted(m.rcpt_tos[0] for m in sink.messages[-2:]) == [
        "failed@example.jp",
        "pending@example.jp",
    ]

    # Copy the past mail, change only To, save and send.
    before = len(sink.messages)
    page.goto(f"{base}/mails/{past}")
    page.click("#copy-link")
    page.fill("#copy-to", "new-address@example.jp")
    page.click("#copy-send")
    page.wait_for_selector("#notice")
    assert page.inner_text("#mail-status") == "sent"
    assert len(sink.messages) == before + 1
    arrived = sink.messages[-1]
    assert arrived.rcpt_tos == ["new-address@example.jp"]
    assert arrived.message["To"] == "new-address@example.jp"
    assert arrived.message["Subject"] == "商品発送のお知らせ"
    assert "250" in page.inner_text("#attempts")  # the new mail's detail: its SMTP reply
    _shot(page, tmp_path, "detail.png")

    # A fuller list for the screenshot: one mail in each remaining status.
    for status, to in (
        ("unsent", "sato.hina@example.jp"),
        ("error", "bad-box@example.jp"),
        ("cancelled", "cancel@example.jp"),
        ("held", "held@example.jp"),
    ):
        mail(session, tea, status=status, to=to)
    session.commit()
    page.goto(f"{base}/?status=all")
    _shot(page, tmp_path, "search.png")

    fresh(session)
    assert {session.get(Mail, i).status for i in prune} == {"deleted"}
    assert session.get(Mail, past).status == "sent"
    actions = [
        (a.actor, a.action, a.count) for a in session.query(StaffAction).order_by(StaffAction.id)
    ]
    assert actions[0] == ("admin", "delete", 2)
    assert ("admin", "send", 2) in actions and ("admin", "copy", 1) in actions
    assert pending and failed


def _shot(page, tmp_path: Path, name: str) -> None:
    # docs/*.png: AUTOMAIL_UPDATE_SCREENSHOTS=1; install Debian's fonts-noto-cjk first,
    # or the Japanese text renders as boxes (the test itself needs no fonts).
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("AUTOMAIL_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(tmp_path / name, DOCS / name)
