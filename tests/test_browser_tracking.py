"""Opens and clicks in headless Chromium against a real `airflow api-server` (issue 18).

A tracked newsletter is sent through the real sending code to the loopback SMTP sink;
its captured HTML part is opened in the browser, which fetches the open pixel and
follows a tracked link through the redirect to a loopback landing page. A forged link
is a 404 and counted nowhere; a scanner-like burst (every link fetched within a
second) is flagged as machine. Then the report page is checked (and screenshotted:
AUTOMAIL_UPDATE_SCREENSHOTS=1 refreshes docs/report.png).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from airflow_server import USERS, AirflowServer, running_airflow
from sqlalchemy import select, update

from automail import settings
from automail.campaigns import create_campaign, tick
from automail.db import session_factory
from automail.models import Mail, TrackingHit
from automail.sample_data import make_customer, make_shop
from automail.sending.smtp import SmtpConfig
from automail.smtp_sink import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
# A person's desktop browser (headless Chromium's own agent says HeadlessChrome: a scanner).
PERSON_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.parametrize("store_url", ["postgres"], indirect=True),
]

if not Path(CHROMIUM).exists() and os.environ.get("CI") != "true":
    pytest.skip(f"{CHROMIUM} not installed (required under CI)", allow_module_level=True)


class _Landing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = f"<html><body><h1 id='landing'>landing {self.path}</h1></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture(scope="module")
def landing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Landing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


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
def page() -> Iterator:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="automail-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1100, "height": 900}, user_agent=PERSON_UA,
            )  # fmt: skip
            ctx.set_default_timeout(20_000)
            yield ctx.new_page()
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _hits(engine) -> list[tuple]:  # noqa: ANN001
    with session_factory(engine)() as s:
        rows = s.execute(
            select(TrackingHit.mail_id, TrackingHit.kind, TrackingHit.link_id, TrackingHit.machine)
            .order_by(TrackingHit.id)
        )  # fmt: skip
        return [tuple(r) for r in rows]


def _wait_for(engine, count: int) -> list[tuple]:  # noqa: ANN001
    """Hits are written by the server's background flush (every 0.2 s): poll, bounded."""
    deadline = time.monotonic() + 20
    while True:
        hits = _hits(engine)
        if len(hits) >= count or time.monotonic() > deadline:
            return hits
        time.sleep(0.1)


def _send_tracked_newsletter(session, engine, server, sink, landing) -> tuple[int, list[Mail]]:  # noqa: ANN001
    settings.put(session, "public_base_url", server.base_url)
    shop = make_shop(session)
    for i in range(12):
        make_customer(session, shop, f"reader{i}@example.jp", name=f"読者{i}")
    now = datetime.now(UTC)
    body = (
        "<html><body><h1>{{ customer_name }} 様 夏のセール</h1>"
        f'<p><a id="sale" href="{landing}/sale">セール会場へ</a></p>'
        f'<p><a id="new" href="{landing}/new">新商品</a> <a id="faq" href="{landing}/faq">FAQ</a></p>'
        "</body></html>"
    )
    campaign = create_campaign(
        session, shop_id=shop.id, name="夏のセール", subject="夏のセールのお知らせ", body=body,
        body_format="html", scheduled_at=now + timedelta(minutes=10), now=now,
        track_opens=True, track_clicks=True,
    )  # fmt: skip
    tick(session, now + timedelta(minutes=10))
    session.commit()
    ids = list(session.scalars(select(Mail.id).where(Mail.campaign_id == campaign.id)))
    from automail.sending import send_now

    summary = send_now(session_factory(engine), ids, "test", smtp=SmtpConfig(port=sink.port))
    assert summary.sent == 12
    # The readers read it ten minutes after delivery (not the scanners' first seconds).
    session.execute(
        update(Mail).where(Mail.id.in_(ids)).values(sent_at=now - timedelta(minutes=10))
    )
    session.commit()
    mails = list(session.scalars(select(Mail).where(Mail.id.in_(ids)).order_by(Mail.id)))
    return campaign.id, mails


def _html_part(captured) -> str:  # noqa: ANN001
    part = captured.message.get_body(preferencelist=("html",))
    return part.get_content()


def test_open_click_forged_and_burst_in_chromium(
    server, engine, session, sink, landing, page, tmp_path
) -> None:
    campaign_id, mails = _send_tracked_newsletter(session, engine, server, sink, landing)
    by_to = {m.rcpt_tos[0]: m for m in sink.messages[-12:]}
    reader, scanned = mails[0], mails[1]

    # 1. The reader opens the mail as captured by the SMTP server: the pixel loads once.
    mail_file = tmp_path / "mail.html"
    mail_file.write_text(_html_part(by_to[reader.to_address]), encoding="utf-8")
    page.goto(mail_file.as_uri())
    page.wait_for_load_state("networkidle")
    assert _wait_for(engine, 1) == [(reader.id, "open", None, None)]

    # 2. A forged link: 404, and nothing is recorded (checked once a later hit is in).
    good = page.get_attribute("#sale", "href")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert page.goto(forged).status == 404
    page.goto(mail_file.as_uri())

    # 3. The reader clicks a link: redirected to the original URL, and counted.
    with page.expect_navigation():
        page.click("#sale")
    assert page.url == f"{landing}/sale"
    assert page.inner_text("#landing") == "landing /sale"
    hits = _wait_for(engine, 3)
    assert [(h[0], h[1], h[3]) for h in hits] == [
        (reader.id, "open", None),
        (reader.id, "open", None),  # the mail page was shown twice: two opens, one person
        (reader.id, "click", None),
    ]

    # 4. A scanner-like burst on another mail: every link fetched within a second.
    scan_file = tmp_path / "scanned.html"
    scan_file.write_text(
        re.sub(r"<img[^>]*>", "", _html_part(by_to[scanned.to_address])),  # scanners click
        encoding="utf-8",
    )
    page.goto(scan_file.as_uri())
    page.evaluate(
        "() => Promise.all([...document.querySelectorAll('a[href*=\"/c/\"]')]"
        ".map(a => fetch(a.href, {mode: 'no-cors'})))"
    )
    hits = _wait_for(engine, 6)
    burst = [h for h in hits if h[0] == scanned.id and h[1] == "click"]
    assert len(burst) == 3 and {h[3] for h in burst} == {"link_burst"}
    assert len(hits) == 6 or all(h[0] == scanned.id for h in hits[6:])  # nothing forged

    # 5. The report page shows the person once and the burst apart.
    _login(page, server)
    page.goto(f"{server.base_url}/automail/reports/campaigns/{campaign_id}")
    figures = {
        row.get_attribute("data-figure"): row.inner_text().split("\t")[-1].strip()
        for row in page.query_selector_all("#figures tr[data-figure]")
    }
    assert figures["unique_opens"] == "1" and figures["unique_clicks"] == "1"
    assert figures["machine_clicks"] == "3" and figures["delivered"] == "12"
    assert figures["open_rate"] == "8.3%"
    assert page.query_selector("#report-chart") is not None
    _screenshot(page, engine, mails, campaign_id, server, tmp_path)


def _login(page, server: AirflowServer) -> None:  # noqa: ANN001
    user, (_, password) = "admin", USERS["admin"]
    page.goto(f"{server.base_url}/auth/login?next={server.base_url}/automail/reports")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)


def _screenshot(page, engine, mails, campaign_id, server, tmp_path) -> None:  # noqa: ANN001
    """A fuller day of readers for docs/report.png (rows written as the recorder would)."""
    if os.environ.get("AUTOMAIL_UPDATE_SCREENSHOTS") != "1":
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        return
    start = datetime.now(UTC) - timedelta(hours=9)
    rows = []
    for i, mail in enumerate(mails[2:], start=2):
        opened = start + timedelta(hours=i - 2, minutes=7 * i)
        rows.append(dict(kind="open", link_id=None, at=opened, mail=mail))
        if i % 3 == 0:
            rows.append(
                dict(
                    kind="click",
                    link_id=1 + (i // 3) % 3,
                    at=opened + timedelta(minutes=2),
                    mail=mail,
                )
            )
    with session_factory(engine)() as s, s.begin():
        for r in rows:
            s.add(TrackingHit(
                mail_id=r["mail"].id, scope="campaign", scope_id=campaign_id,
                customer_id=r["mail"].customer_id, link_id=r["link_id"], kind=r["kind"],
                at=r["at"], method="GET", ua_class="browser",
            ))  # fmt: skip
    page.goto(f"{server.base_url}/automail/reports/campaigns/{campaign_id}")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    DOCS.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "report.png", DOCS / "report.png")
