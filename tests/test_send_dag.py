"""The `automail_send` DAG end to end with dag.test() against the aiosmtpd sink."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from automail import settings
from automail.models import Mail
from automail.sample_data import make_shop

REPO = Path(__file__).resolve().parents[1]


def _load_dag(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture(scope="module")
def smtp_pool(airflow_db: str) -> str:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "pools",
            "set",
            "automail_smtp",
            "4",
            "Automail SMTP connections",
        ],
        check=True,
        capture_output=True,
    )
    return "automail_smtp"


@pytest.fixture
def smtp_env(smtp_sink, monkeypatch):  # noqa: ANN001, ANN201
    uri = f"smtp://127.0.0.1:{smtp_sink.port}?disable_ssl=true&disable_tls=true&timeout=5"
    monkeypatch.setenv("AIRFLOW_CONN_AUTOMAIL_SMTP", uri)
    return smtp_sink


def _mails(session, shop, n: int) -> list[int]:  # noqa: ANN001
    ids = []
    for i in range(n):
        mail = Mail(
            shop_id=shop.id,
            kind="order_confirmation",
            source_key=f"dag:{i}",
            to_address=f"dag{i}@example.jp",
            from_address=shop.from_address,
            reply_to=shop.reply_to,
            subject="ご注文ありがとうございます",
            body_text="山田 花子 様",
        )
        session.add(mail)
        session.flush()
        ids.append(mail.id)
    return ids


def test_send_dag_sends_in_mapped_batches(smtp_pool, session, smtp_env) -> None:  # noqa: ANN001
    sink = smtp_env
    shop = make_shop(session)
    ids = _mails(session, shop, 7)
    settings.put(session, "send_batch_size", 3)  # 3 mapped batches
    session.commit()

    dag = _load_dag("automail_send")
    assert dag.is_paused_upon_creation is True and dag.max_active_runs == 1
    assert dag.catchup is False
    dr = dag.test(logical_date=datetime.now(UTC))
    assert dr.state == "success"

    tis = [ti for ti in dr.get_task_instances() if ti.task_id == "send_batch"]
    assert sorted(ti.map_index for ti in tis) == [0, 1, 2]
    assert all(ti.pool == "automail_smtp" for ti in tis)
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == sorted(
        f"dag{i}@example.jp" for i in range(7)
    )
    assert set(sink.handler.message_id_counts().values()) == {1}
    session.expire_all()
    statuses = session.execute(select(Mail.status, Mail.claimed_by).where(Mail.id.in_(ids))).all()
    assert set(statuses) == {("sent", None)}


def test_send_dag_sends_nothing_when_mail_server_stopped(smtp_pool, session, smtp_env) -> None:  # noqa: ANN001
    shop = make_shop(session)
    _mails(session, shop, 2)
    settings.put(session, "mail_server_stopped", True)
    session.commit()

    dr = _load_dag("automail_send").test(logical_date=datetime.now(UTC))

    assert dr.state == "success"
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["plan"] == "skipped"
    assert smtp_env.messages == []
    session.expire_all()
    assert set(session.scalars(select(Mail.status))) == {"unsent"}


def test_send_dag_maps_each_batch_to_its_shops_relay(
    smtp_pool, session, smtp_env, tmp_path, monkeypatch
) -> None:  # noqa: ANN001, E501
    import json

    from automail.relay_sim import RelaySim, make_test_ca
    from automail.relays import set_shop_relay

    tea = make_shop(session, "tea")
    rice = make_shop(session, "rice", name="米の田中屋")
    set_shop_relay(session, "rice", "automail_smtp_rice", "rakuten")
    tea_ids = _mails(session, tea, 3)
    rice_mails = [
        Mail(
            shop_id=rice.id,
            kind="order_confirmation",
            source_key=f"rice:{i}",
            to_address=f"rice{i}@example.jp",
            from_address=rice.from_address,
            reply_to=rice.reply_to,
            subject="ご注文",
            body_text="田中 様",
        )
        for i in range(4)
    ]
    session.add_all(rice_mails)
    session.commit()
    ca = make_test_ca(tmp_path / "tls")
    with RelaySim(ca) as relay:
        conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": relay.port,
                "login": relay.login, "password": relay.password,
                "extra": {"disable_ssl": True, "ca_file": str(ca.ca_file), "timeout": 10}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_AUTOMAIL_SMTP_RICE", json.dumps(conn))
        dr = _load_dag("automail_send").test(logical_date=datetime.now(UTC))
        assert dr.state == "success"
        assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
            f"rice{i}@example.jp" for i in range(4)
        ]
    assert sorted(m.rcpt_tos[0] for m in smtp_env.messages) == [
        f"dag{i}@example.jp" for i in range(3)
    ]
    session.expire_all()
    rice_ids = [m.id for m in rice_mails]
    assert set(session.scalars(select(Mail.status).where(Mail.id.in_(tea_ids + rice_ids)))) == {
        "sent"
    }
