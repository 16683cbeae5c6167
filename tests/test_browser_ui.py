"""End to end in headless Chromium against a real `airflow api-server` (simple auth
manager, this repo's plugins and DAGs, the PostgreSQL store, a loopback SMTP sink),
through the Airflow menu's iframe as users reach the screen (Browse → Mail data at
/plugin/automail-mails; the iframe has no allow-modals, so confirm() would be a no-op):
log in, search, open a detail page, delete selected and delete all matching with the
in-page confirmation, bulk send with confirmation, copy-and-resend with a new To and
see the message arrive, the sending-state banner and ops' mail-server switch, and a
viewer's view. Also: anonymous and viewer callers refused by the real server.

Set AUTOMAIL_UPDATE_SCREENSHOTS=1 to refresh docs/search.png and docs/detail.png
(install Debian's fonts-noto-cjk first, or the Japanese text renders as boxes).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from airflow_server import USERS, AirflowServer, running_airflow
from management_helpers import mail, shop

from automail.models import Mail, Order, StaffAction
from automail.sample_data import make_customer

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
    home = tmp_path_factory.mktemp("airflow")
    with running_airflow(home, store_url, sink.port, with_dags=True) as s:
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
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            yield page
            assert dialogs == [], f"browser dialogs opened: {dialogs}"  # none, ever
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


MENU = "/plugin/automail-mails"


def login(page, server: AirflowServer, user: str) -> None:
    """Through Airflow's own login form."""
    _, password = USERS[user]
    page.goto(f"{server.base_url}/auth/login?next={server.base_url}/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)


def screen(page, server: AirflowServer, path: str = "/"):  # noqa: ANN201
    """The Mail data screen inside Airflow's menu iframe; returns the iframe's Frame."""
    if not page.url.rstrip("/").endswith(MENU):
        page.goto(f"{server.base_url}{MENU}")
    page.wait_for_selector("iframe")
    deadline = time.monotonic() + 30
    while True:
        found = [f for f in page.frames if f != page.main_frame and "/automail" in f.url]
        if found:
            inner = found[0]
            break
        if time.monotonic() > deadline:
            urls = [f.url for f in page.frames]
            html = page.inner_html("body")[:2000]
            raise AssertionError(f"no /automail iframe in {urls}: {html}")
        page.wait_for_timeout(200)
    if path != "/" or not inner.url.endswith("/automail/"):
        inner.goto(f"{server.base_url}/automail{path}")
    inner.wait_for_selector("main")
    return inner


def go(frame, selector: str) -> None:
    """Click something that loads a new page in the frame, and wait for that page."""
    with frame.expect_navigation():
        frame.click(selector)
    frame.wait_for_selector("main")


def confirm(frame, expect: str) -> None:
    """The in-page confirmation: check what it says, then confirm."""
    frame.wait_for_selector("#confirm")
    assert expect in frame.inner_text("#confirm-text"), frame.inner_text("#confirm")
    go(frame, "#confirm-yes")
    frame.wait_for_selector("#notice")


def test_screen_end_to_end_through_the_airflow_menu(
    server, engine, session, sink, browser_page, tmp_path
):
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
    login(page, server, "admin")
    frame = screen(page, server)
    assert frame.inner_text("#total") == "3"  # the default search: unsent mails

    # Search: all statuses, body substring -> the past shipping notice; open its detail.
    frame.select_option("#f-status", "all")
    frame.fill("#f-body", "1234-5678")
    go(frame, "#search-btn")
    frame.wait_for_selector("#total")
    assert frame.inner_text("#total") == "1"
    go(frame, f"tr[data-id='{past}'] a.detail-link")
    frame.wait_for_selector("#headers")
    assert "old-address@example.jp" in frame.inner_text("#headers")
    assert "追跡番号: 1234-5678" in frame.inner_text("#body-text")
    assert frame.get_attribute("#body-html", "sandbox") == ""

    # Delete selected: the in-page confirmation, then done.
    frame = screen(page, server, "/")
    for mail_id in prune:
        frame.check(f"tr[data-id='{mail_id}'] input.pick")
    go(frame, "#bulk-delete")
    confirm(frame, "Delete 2 mail(s)?")
    assert "2 of 2 mail(s) done" in frame.inner_text("#notice")
    assert frame.inner_text("#total") == "1"

    # Bulk send everything unsent or in error (select all), confirmed in the page.
    frame = screen(page, server, "/?status=all")
    frame.click("#select-on")
    go(frame, "#bulk-send")
    frame.wait_for_selector("#confirm")
    assert len(sink.messages) == 0  # nothing sent before the confirmation
    confirm(frame, "Send 2 mail(s) now?")
    assert "2 accepted by the SMTP server" in frame.inner_text("#notice")
    assert sorted(m.rcpt_tos[0] for m in sink.messages[-2:]) == [
        "failed@example.jp",
        "pending@example.jp",
    ]

    # Copy the past mail, change only To, save and send.
    before = len(sink.messages)
    frame = screen(page, server, f"/mails/{past}")
    go(frame, "#copy-link")
    frame.fill("#copy-to", "new-address@example.jp")
    go(frame, "#copy-send")
    frame.wait_for_selector("#notice")
    assert frame.inner_text("#mail-status") == "sent"
    assert len(sink.messages) == before + 1
    arrived = sink.messages[-1]
    assert arrived.rcpt_tos == ["new-address@example.jp"]
    assert arrived.message["To"] == "new-address@example.jp"
    assert arrived.message["Subject"] == "商品発送のお知らせ"
    assert "250" in frame.inner_text("#attempts")  # the new mail's detail: its SMTP reply
    _shot(page, tmp_path, "detail.png")

    # A fuller list for the screenshot: one mail in each remaining status.
    for i, (status, to, name) in enumerate(
        (
            ("unsent", "sato.hina@example.jp", "佐藤 陽菜"),
            ("error", "bad-box@example.jp", "鈴木 一郎"),
            ("cancelled", "cancel@example.jp", "高橋 美咲"),
            ("held", "held@example.jp", "田中 翔太"),
        )
    ):
        customer = make_customer(session, tea, to, name=name)
        order = Order(
            shop_id=tea.id,
            customer_id=customer.id,
            order_number=f"TEA-{1325 + i:06d}",
            ordered_at=customer.signed_up_at,
        )
        session.add(order)
        session.flush()
        m = mail(session, tea, status=status, to=to)
        m.customer_id, m.order_id = customer.id, order.id
    session.commit()
    frame = screen(page, server, "/?status=all")
    assert "TEA-001325" in frame.inner_text("#results") and "佐藤 陽菜" in frame.inner_text(
        "#results"
    )
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


def test_delete_all_matching_through_the_iframe(server, engine, session, browser_page):
    """1,200 pending mails (past the page query's 1,000): the exact count is shown, and
    "delete all matching" prunes them all as one audited action with its filter."""
    from automail.management.search import COUNT_CAP

    tea = shop(session, "tea")
    n = COUNT_CAP + 200
    for i in range(n):
        mail(session, tea, kind="follow_up", to=f"queue{i}@example.jp")
    keep = mail(session, tea, to="keep@example.jp").id  # order_confirmation: not matched
    session.commit()
    page = browser_page
    login(page, server, "admin")
    frame = screen(page, server, "/?kind=follow_up")
    assert frame.inner_text("#total") == f"{n:,}"
    assert f"{n:,}" in frame.inner_text("#delete-all-matching")
    go(frame, "#delete-all-matching")
    frame.wait_for_selector("#confirm")
    assert "kind=follow_up" in frame.inner_text("#confirm-filter")
    confirm(frame, f"Delete {n} mail(s)?")
    assert f"{n} of {n} mail(s) done" in frame.inner_text("#notice")
    fresh(session)
    (audit,) = session.query(StaffAction).all()
    assert (audit.action, audit.count) == ("delete", n)
    assert audit.detail["scope"] == "all_matching"
    assert audit.detail["filter"] == {"status": "unsent", "kind": "follow_up"}
    assert session.get(Mail, keep).status == "unsent"


def test_sending_state_banner_and_ops_switch(server, engine, session, browser_page):
    from automail import settings

    m = mail(session, shop(session, "tea")).id
    session.commit()
    page = browser_page
    login(page, server, "admin")
    frame = screen(page, server)
    banner = frame.inner_text("#sending-state")
    assert "automail_send is paused" in banner, banner  # DAGs start paused

    server.airflow("dags", "unpause", "automail_send")
    frame = screen(page, server, "/?status=unsent")
    banner = frame.inner_text("#sending-state")
    assert "automail_send is running" in banner, banner

    # Ops stop the mail server from the banner (audited); the row "send" then says so.
    go(frame, "#server-switch-btn")
    frame.wait_for_selector("#notice")
    assert "mail_server_stopped is now true" in frame.inner_text("#notice")
    assert frame.get_attribute("#sending-state", "data-stopped") == "true"
    assert "The mail server is stopped" in frame.inner_text("#sending-state")
    go(frame, f"tr[data-id='{m}'] button.row-action")
    frame.wait_for_selector("#confirm")
    assert "The mail server is stopped" in frame.inner_text("#confirm-state")
    assert frame.is_disabled("#confirm-yes")
    fresh(session)
    assert settings.get(session, "mail_server_stopped") is True
    audit = session.query(StaffAction).filter_by(action="mail_server_stopped").one()
    assert audit.actor == "admin" and audit.detail["to"] is True

    frame = screen(page, server, "/")
    go(frame, "#server-switch-btn")  # and back on
    frame.wait_for_selector("#notice")
    fresh(session)
    assert settings.get(session, "mail_server_stopped") is False
    server.airflow("dags", "pause", "automail_send")


def test_viewer_view_through_the_menu(server, engine, session, browser_page):
    m = mail(session, shop(session, "tea")).id
    session.commit()
    page = browser_page
    login(page, server, "viewer")
    frame = screen(page, server)
    assert "can read but not act" in frame.inner_text("#viewer-note")
    for button in ("#bulk-send", "#bulk-delete", "#delete-all-matching", "#server-switch-btn"):
        assert frame.is_disabled(button), button
    assert "needs role user or above" in (frame.get_attribute("#bulk-send", "title") or "")
    assert "needs role op or above" in frame.inner_text("#server-switch-reason")
    assert frame.is_disabled(f"tr[data-id='{m}'] button.row-action")
    assert frame.locator("a.row-copy").count() == 0
    frame = screen(page, server, f"/mails/{m}")
    assert frame.is_disabled("#act-delete") and frame.locator("#copy-link").count() == 0
    fresh(session)
    assert session.get(Mail, m).status == "unsent"


def _shot(page, tmp_path: Path, name: str) -> None:
    # docs/*.png: AUTOMAIL_UPDATE_SCREENSHOTS=1; install Debian's fonts-noto-cjk first,
    # or the Japanese text renders as boxes (the test itself needs no fonts).
    page.screenshot(path=str(tmp_path / name))  # the Airflow page, the screen in its frame
    if os.environ.get("AUTOMAIL_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(tmp_path / name, DOCS / name)


def test_language_and_colour_mode_follow_airflow(server, engine, session, browser_page):
    """Airflow's language choice (i18next's localStorage key) and dark mode reach the
    framed screen: one language at a time, Airflow's dark palette."""
    mail(session, shop(session, "tea"))
    session.commit()
    page = browser_page
    login(page, server, "admin")
    page.goto(f"{server.base_url}{MENU}")
    page.evaluate("localStorage.setItem('i18nextLng', 'ja')")
    page.emulate_media(color_scheme="dark")
    page.reload()
    frame = screen(page, server)
    frame.wait_for_function("document.documentElement.lang === 'ja'")
    frame.wait_for_selector("#bulk-send")
    text = frame.inner_text("main")
    assert "一括配信" in frame.inner_text("#bulk-send") and "Bulk send" not in text
    assert "メールサーバーを停止" in frame.inner_text("#server-switch-btn")
    bg = frame.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(0, 0, 0)", bg  # Airflow 3's dark background
    page.evaluate("localStorage.setItem('i18nextLng', 'en')")
