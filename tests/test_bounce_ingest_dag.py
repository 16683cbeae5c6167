"""The `automail_bounces` DAG (dag.test) reading a folder mailbox through the
`automail_bounce_mailbox` connection: a delayed bounce for a mail the sink accepted."""

from __future__ import annotations

import importlib.util
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bounce_helpers import FIXTURES, dsn, sent_to_sink
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from automail.models import Bounce, Customer, Mail
from automail.smtp_sink import SmtpSink

REPO = Path(__file__).resolve().parents[1]


def _load_dag():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(
        "automail_bounces", REPO / "dags" / "automail_bounces.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_dag_ingests_the_folder_mailbox(
    airflow_db: str,
    engine: Engine,
    session: Session,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mail, customer, data = sent_to_sink(engine, session, smtp_sink, "x@example.jp")
    box = tmp_path / "bounces"
    box.mkdir()
    (box / "0001-dsn.eml").write_bytes(dsn(data, "x@example.jp"))
    shutil.copy(FIXTURES / "vacation-ja-iso2022jp.eml", box / "0002-vacation.eml")
    conn = {"conn_type": "fs", "extra": {"path": str(box)}}
    monkeypatch.setenv("AIRFLOW_CONN_AUTOMAIL_BOUNCE_MAILBOX", json.dumps(conn))

    dag = _load_dag()
    assert dag.is_paused_upon_creation is True and "automail" in dag.tags
    dr = dag.test(logical_date=datetime.now(UTC))

    assert dr.state == "success"
    session.rollback()
    session.expire_all()
    m = session.get(Mail, mail.id)
    assert (m.status, m.bounce_outcome) == ("sent", "hard")
    c = session.get(Customer, customer.id)
    assert (c.address_cleaned, c.consecutive_failures) == (True, 1)
    rows = session.scalars(select(Bounce).order_by(Bounce.id)).all()
    assert [(r.mail_id, r.outcome, r.effect) for r in rows] == [
        (mail.id, "hard", "applied"),
        (None, "none", "ignored"),
    ]
    assert sorted(p.name for p in (box / "processed").iterdir()) == [
        "0001-dsn.eml",
        "0002-vacation.eml",
    ]
    assert list(box.glob("*.eml")) == []
    ti = dr.get_task_instances()[0]
    assert ti.state == "success"
