"""The import DAG, the asset chain import -> creation -> send, and backfill after an import."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from pathlib import Path

from import_helpers import ne_row, write_csv
from sqlalchemy import func, select, update

from automail import settings
from automail.creation import create_transactional, set_kind
from automail.imports import import_file
from automail.models import Mail, Order, ShopMailKind
from automail.rendering import install_default_templates
from automail.sample_data import make_shop

REPO = Path(__file__).resolve().parents[1]
T = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)  # creation switched on
HOUR = timedelta(hours=1)


def _load_dag(name: str):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, REPO / "dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _states(dr) -> dict[str, str]:  # noqa: ANN001
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_assets_chain_import_to_creation_to_send() -> None:
    from automail_assets import MAILS_CREATED, ORDERS_CHANGED

    imp = _load_dag("automail_import")
    create = _load_dag("automail_create_transactional")
    send = _load_dag("automail_send")
    assert imp.get_task("import_new_data").outlets == [ORDERS_CHANGED]
    assert create.get_task("announce").outlets == [MAILS_CREATED]
    # Creation: on the import's asset OR hourly; send: on creation's asset OR every 5 min.
    assert create.timetable.asset_condition.objects == (ORDERS_CHANGED,)
    assert send.timetable.asset_condition.objects == (MAILS_CREATED,)
    assert type(create.timetable.timetable).__name__ == "CronDataIntervalTimetable"
    # Sending still starts paused (A4): an asset event never sends before ops unpause.
    assert send.is_paused_upon_creation is True
    assert create.get_task("create_partition").operator_name == "CreateMailsOperator"


def test_import_dag_imports_the_drop_folder_then_skips_when_nothing_changed(
    airflow_db, engine, session, tmp_path
) -> None:
    make_shop(session, "tea")
    drop = tmp_path / "drop"
    settings.put(session, "import_drop_location", str(drop))
    settings.put(session, "import_settle_seconds", 0)
    session.commit()
    folder = drop / "tea" / "orders"
    folder.mkdir(parents=True)
    (folder / "mapping.toml").write_text('preset = "next_engine_orders"\n', encoding="utf-8")
    write_csv(folder / "a.csv", [ne_row("D-1", "2026/11/20 10:00", "客", "d1@example.jp")])
    dag = _load_dag("automail_import")
    dr = dag.test(logical_date=datetime(2026, 11, 20, 2, 0, tzinfo=UTC))
    assert dr.state == "success"
    assert _states(dr) == {"import_new_data": "success", "check_failures": "success"}
    assert session.scalar(select(func.count()).select_from(Order)) == 1
    # Nothing new: the import task is skipped, so no asset event starts creation.
    dr = dag.test(logical_date=datetime(2026, 11, 20, 2, 2, tzinfo=UTC))
    assert _states(dr)["import_new_data"] == "skipped"
    # A file that fails as a whole fails the run (after the others were imported).
    (folder / "bad.csv").write_bytes("受注番号,受注日\nX,1\n".encode("cp932"))
    write_csv(folder / "b.csv", [ne_row("D-2", "2026/11/20 11:00", "客", "d1@example.jp")])
    dr = dag.test(logical_date=datetime(2026, 11, 20, 2, 4, tzinfo=UTC))
    assert _states(dr) == {"import_new_data": "success", "check_failures": "failed"}
    session.commit()
    assert session.scalar(select(func.count()).select_from(Order)) == 2


def test_backfill_after_importing_a_historical_export(airflow_db, engine, session, tmp_path):
    """README, Backfill: (1) import the export, (2) backfill creation over its range."""
    install_default_templates(session)
    shop = make_shop(session, "tea")
    for kind in ("order_confirmation", "shipping_notice"):
        set_kind(session, shop, kind, True, now=T)
    session.commit()
    start = T + 24 * HOUR
    rows = [
        ne_row(f"H-{i}", (start + i * timedelta(minutes=25) + 9 * HOUR).strftime("%Y/%m/%d %H:%M"),
               "客", f"h{i}@example.jp",
               (start + (i + 2) * timedelta(minutes=25) + 9 * HOUR).strftime("%Y/%m/%d %H:%M")
               if i % 2 else "")
        for i in range(7)
    ]  # fmt: skip
    result = import_file(
        engine, write_csv(tmp_path / "history.csv", rows), "orders", "tea", "next_engine_orders"
    )
    assert result.inserted == 7
    dag = _load_dag("automail_create_transactional")
    hours = [start + k * HOUR for k in range(1, 5)]
    for h in hours:  # what `airflow backfill create` queues: one run per interval
        dr = dag.test(logical_date=h)
        assert dr.state == "success"
    session.commit()
    backfilled = set(session.execute(select(Mail.kind, Mail.source_key)))
    assert len([k for k, _ in backfilled if k == "order_confirmation"]) == 7
    assert len([k for k, _ in backfilled if k == "shipping_notice"]) == 3
    # Equal to one run over the whole range.
    session.execute(Mail.__table__.delete())
    session.execute(update(ShopMailKind).values(covered_until=None, lookback_done_at=None))
    session.commit()
    create_transactional(session, start, hours[-1], now=hours[-1])
    assert set(session.execute(select(Mail.kind, Mail.source_key))) == backfilled
