"""The real creation DAG, run with dag.test() against the store (A2, A4)."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from automail.creation import set_kind
from automail.models import Mail
from automail.rendering import install_default_templates
from automail.sample_data import make_customer, make_order, make_shop

REPO = Path(__file__).resolve().parents[1]


def _load_dag(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_creation_dag_creates_each_mail_once_and_sends_nothing(airflow_db, session):
    start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    install_default_templates(session)
    shop = make_shop(session)
    for i in range(5):
        customer = make_customer(session, shop, email=f"dag{i}@example.jp")
        make_order(session, customer, start - timedelta(days=2, minutes=i))
    set_kind(session, shop, "order_confirmation", True, now=start)
    session.commit()

    dag = _load_dag("automail_create_transactional")
    assert dag.is_paused_upon_creation is True
    dr = dag.test(logical_date=start)
    assert dr.state == "success"
    assert session.scalar(select(func.count()).select_from(Mail)) == 5
    dr = dag.test(logical_date=start + timedelta(hours=1))  # the next hour: nothing new
    assert dr.state == "success"
    assert session.scalar(select(func.count()).select_from(Mail)) == 5
    # Creation never sends: every mail waits for review, with no attempt made.
    rows = session.execute(select(Mail.status, Mail.attempt_count, Mail.sent_at)).all()
    assert {tuple(r) for r in rows} == {("unsent", 0, None)}
