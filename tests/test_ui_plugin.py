"""The mail data screen's FastAPI app in-process (Starlette TestClient): every route
refuses anonymous callers; viewers read but cannot act; forms need the CSRF token and
a same-origin request; pages and JSON answers carry the search and actions.

The Airflow user is injected by overriding `get_user` (the JWT path itself is covered
against a real `airflow api-server` in test_browser_ui.py); the permission check is
the real simple auth manager's.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="automail-ui-airflow-"))
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))

import pytest  # noqa: E402
from airflow.api_fastapi.app import create_auth_manager  # noqa: E402
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser  # noqa: E402
from airflow.api_fastapi.core_api.security import get_user  # noqa: E402
from automail_ui import csrf  # noqa: E402
from automail_ui.web import app  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from management_helpers import mail, shop  # noqa: E402

from automail.models import Mail, StaffAction  # noqa: E402

HOST = "testserver"
ROUTES_GET = [
    "/",
    "/mails/1",
    "/mails/1/copy",
    "/history",
    "/export.csv",
    "/api/mails",
    "/api/mails/1",
    "/api/history",
]
ROUTES_POST = ["/actions", "/mails/1/copy", "/api/actions", "/api/mails/1/copy"]


@pytest.fixture(scope="module", autouse=True)
def _auth_manager():
    am = create_auth_manager()
    app.state.auth_manager = am
    yield


@pytest.fixture
def client():
    with TestClient(app, base_url=f"http://{HOST}") as c:
        yield c
    app.dependency_overrides.clear()


def fresh(session) -> None:
    """See the app's commits: end the read snapshot (SQLite WAL) and drop cached rows."""
    session.rollback()
    session.expire_all()


def login(role: str, name: str | None = None) -> str:
    user = SimpleAuthManagerUser(username=name or role, role=role)
    app.dependency_overrides[get_user] = lambda: user
    return user.username


@pytest.mark.parametrize("path", ROUTES_GET)
def test_anonymous_get_is_refused_without_data(client, path):
    r = client.get(path)
    assert r.status_code == 401
    assert "mail" not in r.text.lower() or "not authenticated" in r.text.lower()


@pytest.mark.parametrize("path", ROUTES_POST)
def test_anonymous_post_is_refused(client, path):
    r = client.post(path, json={"action": "delete", "ids": [1]})
    assert r.status_code == 401


def test_anonymous_browser_gets_login_link(client):
    r = client.get("/", headers={"accept": "text/html"})
    assert r.status_code == 401 and "/auth/login?next=" in r.text


def test_invalid_token_is_refused(client):
    r = client.get("/api/mails", headers={"authorization": "Bearer not-a-jwt"})
    assert r.status_code in (401, 403)


def test_viewer_reads_but_cannot_act(client, session):
    m = mail(session, shop(session))
    session.commit()
    login("viewer")
    assert client.get("/api/mails").json()["total"] == 1
    assert client.get("/").status_code == 200
    r = client.post("/api/actions", json={"action": "delete", "ids": [m.id]})
    assert r.status_code == 403
    assert client.get(f"/mails/{m.id}/copy").status_code == 403
    fresh(session)
    assert session.get(Mail, m.id).status == "unsent"


def test_search_page_shows_rows_count_and_validation_errors(client, session):
    tea = shop(session)
    a = mail(session, tea, to="hanako@example.jp")
    mail(session, tea, status="sent", to="sent@example.jp")
    session.commit()
    login("user")
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="total">1<' in page.text and f'data-id="{a.id}"' in page.text
    assert 'value="send:' in page.text and 'value="cancel:' in page.text
    bad = client.get("/", params={"sent_from": "2026-13-01"})
    assert bad.status_code == 400 and "sent_from: &#39;2026-13-01&#39; is not a date" in bad.text
    api_bad = client.get("/api/mails", params={"sent_from": "2026-13-01"})
    assert api_bad.status_code == 400
    assert api_bad.json()["detail"]["errors"] == [
        "sent_from: '2026-13-01' is not a date (YYYY-MM-DD)"
    ]


def test_form_action_needs_csrf_token_and_same_origin(client, session):
    m = mail(session, shop(session))
    session.commit()
    name = login("user", "reviewer1")
    form = {"bulk": "delete", "ids": str(m.id), "next": "/"}
    assert client.post("/actions", data=form).status_code == 403  # no token
    forged = {**form, "csrf_token": csrf.make_token("someone-else")}
    assert client.post("/actions", data=forged).status_code == 403
    good = {**form, "csrf_token": csrf.make_token(name)}
    cross = client.post("/actions", data=good, headers={"origin": "https://evil.example"})
    assert cross.status_code == 403
    fresh(session)
    assert session.get(Mail, m.id).status == "unsent"
    ask = client.post("/actions", data=good, headers={"origin": f"http://{HOST}"})
    assert ask.status_code == 200 and 'id="confirm-yes"' in ask.text  # in-page confirmation
    assert "Yes, delete 1 mail(s)" in ask.text
    fresh(session)
    assert session.get(Mail, m.id).status == "unsent"
    r = client.post(
        "/actions",
        data={**good, "confirmed": "1"},
        headers={"origin": f"http://{HOST}"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert "done=" in r.headers["location"], r.headers["location"]
    fresh(session)
    assert session.get(Mail, m.id).status == "deleted"
    audit = session.query(StaffAction).one()
    assert (audit.actor, audit.action, audit.count) == ("reviewer1", "delete", 1)
    page = client.get(r.headers["location"].replace("http://testserver", ""))
    assert 'id="notice"' in page.text and "reviewer1" in page.text


def test_json_actions_need_json_content_type(client, session):
    m = mail(session, shop(session))
    session.commit()
    login("user")
    r = client.post("/api/actions", data={"action": "cancel", "ids": str(m.id)})
    assert r.status_code == 415
    ok = client.post("/api/actions", json={"action": "cancel", "ids": [m.id]})
    assert ok.status_code == 200 and ok.json()["done"] == [m.id]
    refused = client.post("/api/actions", json={"action": "cancel", "ids": [m.id]})
    assert refused.status_code == 409
    assert refused.json()["refused"] == [
        f"mail {m.id}: cannot cancel a mail whose status is 'cancelled' (allowed from: unsent)"
    ]


def test_delete_all_matching_checks_the_count_shown(client, session):
    tea = shop(session)
    pending = [mail(session, tea, body=f"注文 {i}").id for i in range(3)]
    sent = mail(session, tea, status="sent", body="注文 sent").id
    session.commit()
    login("user", "reviewer2")
    body = {"action": "delete", "filter": {"status": "all", "body": "注文"}, "expected_total": 3}
    stale = client.post("/api/actions", json=body)
    assert stale.status_code == 400 and "now matches 4 mail(s), not the 3 shown" in stale.text
    r = client.post("/api/actions", json={**body, "expected_total": 4})
    assert r.status_code == 200 and sorted(r.json()["done"]) == sorted(pending)
    fresh(session)
    assert session.get(Mail, sent).status == "sent"
    audit = session.get(StaffAction, r.json()["staff_action_id"])
    assert audit.detail["scope"] == "all_matching" and audit.detail["filter"]["body"] == "注文"


def test_detail_page_escapes_html_into_sandboxed_iframe(client, session):
    m = mail(session, shop(session), html='<p onclick="x()">"hi"</p><script>alert(1)</script>')
    session.commit()
    login("viewer")
    page = client.get(f"/mails/{m.id}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert 'sandbox srcdoc="&lt;p onclick=&#34;x()&#34;&gt;' in page.text
    api = client.get(f"/api/mails/{m.id}").json()
    assert api["row_action"] == "send" and "cancel" in api["allowed_actions"]
    assert client.get("/api/mails/999999").status_code == 404


def test_export_and_history_routes(client, session):
    mail(session, shop(session), to="csv@example.jp")
    session.commit()
    login("viewer")
    r = client.get("/export.csv", params={"status": "all"})
    assert r.status_code == 200 and "csv@example.jp" in r.content.decode("utf-8-sig")
    assert client.get("/history").status_code == 200
    assert client.get("/api/history", params={"shop": "nope"}).status_code == 400


TEMPLATES = PLUGINS / "automail_ui" / "templates"


def test_no_browser_dialogs_anywhere():
    """Airflow's plugin iframe has no allow-modals: confirm()/alert()/prompt() do nothing."""
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        for call in ("confirm(", "alert(", "prompt("):
            assert call not in text, f"{path.name} calls {call}"


def test_sending_is_confirmed_with_the_sending_state(client, session):
    from automail import settings

    m = mail(session, shop(session))
    settings.put(session, "mail_server_stopped", True)
    session.commit()
    name = login("user", "reviewer3")
    form = {"row": f"send:{m.id}", "next": "/", "csrf_token": csrf.make_token(name)}
    ask = client.post("/actions", data=form)
    assert ask.status_code == 200 and "Send 1 mail(s) now?" in ask.text
    assert "The mail server is stopped" in ask.text and 'id="confirm-state"' in ask.text
    assert 'id="confirm-yes"\n      disabled' in ask.text or "disabled>" in ask.text
    fresh(session)
    assert session.get(Mail, m.id).status == "unsent" and not session.query(StaffAction).count()


def test_viewer_sees_disabled_buttons_with_the_reason(client, session):
    m = mail(session, shop(session))
    session.commit()
    login("viewer")
    page = client.get("/").text
    assert "can read but not act" in page
    for button in ("bulk-send", "bulk-delete", "delete-all-matching"):
        tag = page[page.index(f'id="{button}"') :].split(">", 1)[0]
        assert "disabled" in tag and "needs role user or above" in tag, tag
    assert 'class="row-copy"' not in page and "row-copy-off" in page
    switch = page[page.index('id="server-switch-btn"') :].split(">", 1)[0]
    assert "disabled" in switch and "needs role op or above" in switch
    detail = client.get(f"/mails/{m.id}").text
    assert 'id="copy-link"' not in detail
    assert "disabled" in detail[detail.index('id="act-delete"') :].split(">", 1)[0]


def test_ops_switch_the_mail_server_from_the_screen_audited(client, session):
    from automail import settings

    session.commit()
    user = login("user", "reviewer4")
    form = {"stopped": "1", "next": "/", "csrf_token": csrf.make_token(user)}
    assert client.post("/sending/server", data=form).status_code == 403
    op = login("op", "ops1")
    form["csrf_token"] = csrf.make_token(op)
    r = client.post("/sending/server", data=form, follow_redirects=False)
    assert r.status_code == 303
    fresh(session)
    assert settings.get(session, "mail_server_stopped") is True
    audit = session.query(StaffAction).one()
    assert (audit.actor, audit.action) == ("ops1", "mail_server_stopped")
    assert audit.detail["from"] is False and audit.detail["to"] is True
    page = client.get(r.headers["location"].replace("http://testserver", "")).text
    assert 'data-stopped="true"' in page and "mail_server_stopped is now true" in page
    assert client.get("/api/sending").json()["mail_server_stopped"] is True
    bad = client.post("/sending/server", data={**form, "stopped": "yes"}, follow_redirects=False)
    assert "error=" in bad.headers["location"]


def test_copy_and_send_while_stopped_says_the_copy_was_saved(client, session):
    from automail import settings

    m = mail(session, shop(session), status="sent")
    settings.put(session, "mail_server_stopped", True)
    session.commit()
    name = login("user", "reviewer5")
    form = {"to": "new@example.jp", "send": "1", "csrf_token": csrf.make_token(name)}
    r = client.post(f"/mails/{m.id}/copy", data=form, follow_redirects=False)
    fresh(session)
    copy = session.query(Mail).filter(Mail.copied_from_id == m.id).one()
    assert r.headers["location"].startswith(f"/mails/{copy.id}?")
    page = client.get(r.headers["location"].replace("http://testserver", "")).text
    assert f"the copy was saved as mail {copy.id}" in page and "nothing was sent" in page
    api = client.post(f"/api/mails/{m.id}/copy", json={"to": "b@example.jp", "send": True})
    assert api.status_code == 409 and "saved as mail" in api.json()["detail"]["errors"][0]


def test_rows_show_subject_customer_order_number_and_zone(client, session):
    from datetime import UTC, datetime

    from automail.models import Customer, Order

    tea = shop(session)
    c = Customer(
        shop_id=tea.id,
        name="山田 花子",
        email="hanako@example.jp",
        signed_up_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    session.add(c)
    session.flush()
    o = Order(
        shop_id=tea.id,
        customer_id=c.id,
        order_number="RICE-001325",
        ordered_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    session.add(o)
    session.flush()
    m = mail(session, tea, subject="ご注文ありがとうございます")
    m.customer_id, m.order_id = c.id, o.id
    session.commit()
    login("viewer")
    page = client.get("/").text
    assert "RICE-001325" in page and "山田 花子" in page and "ご注文ありがとうございます" in page
    assert f">{o.id}<" not in page.split('class="row-order"')[1][:40]
    assert "JST (UTC+09:00)" in page
    detail = client.get(f"/mails/{m.id}").text
    assert 'id="order-number">RICE-001325<' in detail and "JST" in detail


def test_one_language_at_a_time(client, session):
    mail(session, shop(session))
    session.commit()
    login("user")
    en = client.get("/", headers={"accept-language": "en-US,en"}).text
    ja = client.get("/", cookies={"automail_lang": "ja"}).text
    assert "Delete selected" in en and "選択したメールを削除" not in en
    assert "選択したメールを削除" in ja and "Delete selected" not in ja
    assert '<html lang="ja">' in ja and '<html lang="en">' in en
    assert "一括配信" in client.get("/", headers={"accept-language": "ja,en"}).text


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_store_work_never_blocks_the_event_loop(client, session, store_url):
    """Issue 12 item 14: an action stuck on the store (here: waiting for SQLite's write
    lock, as it would for a slow relay) must not freeze the API server; a read answers
    meanwhile. Were the handler running on the event loop, the read would wait for it."""
    import sqlite3
    import threading

    m = mail(session, shop(session))
    session.commit()
    login("user")
    holder = sqlite3.connect(store_url.removeprefix("sqlite:///"), check_same_thread=False)
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE settings SET key = key WHERE 1 = 0")
    outcome: dict[str, int] = {}

    def act() -> None:
        r = client.post("/api/actions", json={"action": "cancel", "ids": [m.id]})
        outcome["status"] = r.status_code

    worker = threading.Thread(target=act)
    worker.start()
    try:
        read = client.get("/api/mails")  # answered while the action still waits
        assert read.status_code == 200 and worker.is_alive()
    finally:
        holder.execute("COMMIT")
        holder.close()
    worker.join(60)
    assert outcome == {"status": 200}
    fresh(session)
    assert session.get(Mail, m.id).status == "cancelled"
