"""A whole newsletter through the real `automail_campaigns` DAG (dag.test) to the local
SMTP sink, and the step-mail DAG over consecutive and re-run intervals."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from automail.campaigns import create_campaign
from automail.campaigns.unsubscribe import verify_token
from automail.models import Campaign, CampaignEvent, Mail
from automail.sample_data import make_customer, make_shop
from automail.steps import add_step, create_sequence

REPO = Path(__file__).resolve().parents[1]


def _load_dag(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture
def smtp_env(smtp_sink, monkeypatch):  # noqa: ANN001, ANN201
    uri = f"smtp://127.0.0.1:{smtp_sink.port}?disable_ssl=true&disable_tls=true"
    monkeypatch.setenv("AIRFLOW_CONN_AUTOMAIL_SMTP", uri)
    return smtp_sink


@pytest.fixture
def smtp_pool(airflow_db: str) -> str:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "airflow", "pools", "set", "automail_smtp", "4", "SMTP"]
    subprocess.run(cmd, check=True, capture_output=True)
    return "automail_smtp"


def test_campaign_end_to_end_through_the_dag(airflow_db, smtp_pool, session, smtp_env) -> None:
    sink = smtp_env
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    shop = make_shop(session)
    for i in range(4):
        make_customer(session, shop, f"fan{i}@example.jp", name=f"顧客{i}")
    make_customer(session, shop, "gone@example.jp")  # the sink refuses this one (550)
    make_customer(session, shop, "optout@example.jp", marketing_opt_in=False)
    sink.handler.reject["gone@example.jp"] = "550 5.1.1 <gone@example.jp>: no such user"
    campaign = create_campaign(
        session,
        shop_id=shop.id,
        name="新茶のご案内",
        subject="[TENPO_NAME] 新茶入荷",
        body="[CUSTOMER_NAME] 様\n新茶が入荷しました。",
        body_format="text",
        scheduled_at=now - timedelta(minutes=6),
        now=now - timedelta(hours=1),  # scheduled an hour ago
    )
    session.commit()

    dag = _load_dag("automail_campaigns")
    assert dag.is_paused_upon_creation is True
    dr = dag.test(logical_date=now)
    assert dr.state == "success"
    assert sink.messages == []  # released, not sent: automail_send is the one send path
    sender = _load_dag("automail_send")
    assert sender.test(logical_date=now).state == "success"
    assert dag.test(logical_date=now + timedelta(minutes=1)).state == "success"  # counts

    session.rollback()
    session.expire_all()
    c = session.get(Campaign, campaign.id)
    assert c.status == "counted", c.status_reason
    assert (c.targets, c.succeeded, c.errors, c.unsent) == (5, 4, 1, 0)
    trail = session.scalars(
        select(CampaignEvent.to_status)
        .where(CampaignEvent.campaign_id == c.id)
        .order_by(CampaignEvent.id)
    ).all()
    assert trail == ["scheduled", "preparing", "sending", "sent", "counting", "counted"]
    delivered = sorted(m.rcpt_tos[0] for m in sink.messages)
    assert delivered == [f"fan{i}@example.jp" for i in range(4)]
    for captured in sink.messages:
        msg = captured.message
        assert msg["Subject"] == "お茶の山田園 新茶入荷"
        link = msg["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert link in msg.get_content()
        assert verify_token(link.split("t=", 1)[1])[0] == shop.id
    refused = session.scalars(select(Mail).where(Mail.to_address == "gone@example.jp")).one()
    assert refused.status == "error" and "5.1.1" in (refused.last_error or "")

    dr = dag.test(logical_date=now + timedelta(minutes=5))  # another run: nothing more
    assert dr.state == "success"
    assert sender.test(logical_date=now + timedelta(minutes=5)).state == "success"
    assert len(sink.messages) == 4
    assert session.scalar(select(func.count()).select_from(Mail)) == 5


def test_step_dag_reruns_and_backfill_create_each_step_once(airflow_db, session) -> None:
    t0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
    shop = make_shop(session)
    seq = create_sequence(session, shop_id=shop.id, name="welcome", start_event="signup", now=t0)
    add_step(session, seq.id, offset="20m", subject="ようこそ", body_text="a")
    add_step(session, seq.id, offset="1h", subject="1時間後", body_text="b")
    make_customer(session, shop, "a@example.jp", signed_up_at=t0 + timedelta(minutes=3))
    session.commit()
    dag = _load_dag("automail_step_mails")
    # The run for [00:20, 00:30) sees the 20-minute step (due 00:23), not the 1-hour one.
    assert dag.test(logical_date=t0 + timedelta(minutes=30)).state == "success"
    keys = session.scalars(select(Mail.source_key).order_by(Mail.id)).all()
    assert len(keys) == 1
    session.rollback()  # end the read snapshot so later runs' rows become visible
    session.expire_all()
    for minutes in (30, 90, 30, 90):  # a rerun, a later run, and a backfill of both again
        assert dag.test(logical_date=t0 + timedelta(minutes=minutes)).state == "success"
    due = session.scalars(select(Mail.due_at).order_by(Mail.id)).all()
    assert due == [t0 + timedelta(minutes=23), t0 + timedelta(minutes=63)]
