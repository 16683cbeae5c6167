"""The opens/clicks report pages of the management screen in-process (TestClient), on
both stores: login required, figures and the server-drawn SVG chart on the page, the
JSON twin, and "resend to non-openers" (role user and up, CSRF-checked). The user is
injected by overriding `get_user` as in test_ui_plugin.py; the browser path against a
real api-server is tests/test_browser_tracking.py."""

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
from sqlalchemy import select  # noqa: E402
from tracking_helpers import sent_campaign  # noqa: E402

from automail.models import Campaign, CampaignRecipient, TrackingHit  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _auth_manager():
    app.state.auth_manager = create_auth_manager()
    yield


@pytest.fixture
def client():
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as c:
        yield c
    app.dependency_overrides.clear()


def login(role: str) -> str:
    user = SimpleAuthManagerUser(username=role, role=role)
    app.dependency_overrides[get_user] = lambda: user
    return user.username


def test_report_page_chart_json_and_resend(client, session) -> None:  # noqa: ANN001
    campaign, mails = sent_campaign(session, customers=3)
    campaign.status = "counted"
    session.add(
        TrackingHit(
            mail_id=mails[0].id, scope="campaign", scope_id=campaign.id,
            customer_id=mails[0].customer_id, link_id=None, kind="open",
            at=mails[0].sent_at, method="GET", ua_class="browser",
        )
    )  # fmt: skip
    session.commit()
    page = f"/reports/campaigns/{campaign.id}"
    for path in ("/reports", page, f"/api/reports/campaigns/{campaign.id}"):
        assert client.get(path).status_code == 401
    login("viewer")
    html = client.get(page, headers={"accept": "text/html"}).text
    assert 'data-figure="open_rate"' in html and "33.3%" in html
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="report-chart"' in html
    assert "cannot be counted" in html
    assert client.get("/reports").text.count(f"/reports/campaigns/{campaign.id}") == 1
    data = client.get(f"/api/reports/campaigns/{campaign.id}").json()
    assert data["rows"][0]["unique_opens"] == 1 and len(data["links"]) == 3
    assert client.get("/reports/campaigns/999").status_code == 404
    form = {"csrf_token": csrf.make_token("viewer"), "at": ""}
    assert client.post(f"{page}/resend", data=form).status_code == 403  # viewers read only
    name = login("user")
    assert client.post(f"{page}/resend", data={"at": ""}).status_code in (400, 403)
    r = client.post(f"{page}/resend", data={"csrf_token": csrf.make_token(name), "at": "x"})
    assert r.status_code == 303 and "error=at" in r.headers["location"]
    r = client.post(f"{page}/resend", data={"csrf_token": csrf.make_token(name), "at": ""})
    assert r.status_code == 303 and "resent=" in r.headers["location"]
    new_id = int(r.headers["location"].rsplit("resent=", 1)[1])
    session.rollback()
    resend = session.get(Campaign, new_id)
    frozen = set(
        session.scalars(
            select(CampaignRecipient.customer_id).where(CampaignRecipient.campaign_id == new_id)
        )
    )
    assert resend.audience_mode == "fixed" and frozen == {m.customer_id for m in mails[1:]}
