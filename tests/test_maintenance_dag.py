"""The `automail_maintenance` DAG with dag.test(): new mails enter the search indexes."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

from management_helpers import mail, shop
from sqlalchemy import select

from automail import search_index
from automail.management.search import parse_filter, search
from automail.models import Mail

REPO = Path(__file__).resolve().parents[1]


def _load_dag():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "automail_maintenance", REPO / "dags" / "automail_maintenance.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_maintenance_dag_indexes_pending_mails(airflow_db, session) -> None:  # noqa: ANN001
    tea = shop(session)
    made = [mail(session, tea, body=f"注文番号 ORD-{i}").id for i in range(4)]
    session.commit()
    assert search_index.pending_count(session) == 4

    dag = _load_dag()
    assert dag.is_paused_upon_creation is True and "automail" in dag.tags
    dr = dag.test(logical_date=datetime.now(UTC))
    assert dr.state == "success"

    session.rollback()  # end the read transaction: SQLite would keep its old snapshot
    flags = session.scalars(select(Mail.search_indexed).where(Mail.id.in_(made))).all()
    assert flags == [True] * 4 and search_index.pending_count(session) == 0
    assert [r.id for r in search(session, parse_filter({"body": "ord-2"})).rows] == [made[2]]
