"""Step mails (SPEC D1, D2): every 10 minutes, create the step mails due by the end of
the run's data interval.

Creation only (the `automail_send` DAG sends them at their due minute). Idempotent
per (step, customer), so reruns and `airflow backfill create` over any past range
create exactly the mails due by then, none twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, task

with DAG(
    dag_id="automail_step_mails",
    description="Create step mails that are due (never sends)",
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["automail", "step", "creation"],
    doc_md=__doc__,
) as dag:

    @task
    def create_step_mails(data_interval_end=None) -> dict:  # noqa: ANN001
        from automail.db import session_scope
        from automail.steps import create_due_step_mails

        with session_scope() as session:
            report = create_due_step_mails(session, until=data_interval_end)
        return {
            "created": report.created,
            "by_step": {str(k): v for k, v in report.by_step.items()},
        }

    create_step_mails()
