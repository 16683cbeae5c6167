"""Hourly creation of order-confirmation, shipping and follow-up mails (SPEC A1–A3, F1).

Creation only: this DAG never sends. Each run covers its data interval (plus the
lookback on a kind's first run, see automail.creation.windows) and is idempotent,
so reruns and `airflow backfill create` never make a mail twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, task

with DAG(
    dag_id="automail_create_transactional",
    description="Create transactional mails from orders and shipments (never sends)",
    # Interval timetable: each run owns [start, end), which backfill relies on.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    is_paused_upon_creation=True,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["automail", "creation"],
    doc_md=__doc__,
) as dag:

    @task
    def create_mails(data_interval_start=None, data_interval_end=None, run_id=None) -> dict:  # noqa: ANN001
        from automail.creation import create_transactional
        from automail.db import session_scope

        with session_scope() as session:
            report = create_transactional(
                session, data_interval_start, data_interval_end, run_id=run_id or "manual"
            )
        return {"created": report.created, "held": report.held, "total": report.total}

    create_mails()
