"""Step mails, every 10 minutes: creates the step mails of active sequences that are due
by the end of the run (a run started by hand: due by now). Never sends: `automail_send`
sends each at its due minute.

**When to unpause it.** With `automail_send`, once sequences exist
(`automail steps create`). It starts paused.

**What it never does.** It never sends, and never makes a step mail twice for one
customer: reruns and `airflow backfill create` over any range create exactly the mails
due by then.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, task

with DAG(
    dag_id="automail_step_mails",
    description="Create step mails that are due (never sends)",
    schedule=CronDataIntervalTimetable("*/10 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={"retries": 2},  # retry delay: [core] default_task_retry_delay
    tags=["automail", "step", "creation"],
    doc_md=__doc__,
) as dag:

    @task
    def create_step_mails(data_interval_end=None) -> dict:  # noqa: ANN001
        from automail.creation.windows import run_interval
        from automail.db import session_scope
        from automail.steps import create_due_step_mails

        _, until = run_interval(None, data_interval_end)
        with session_scope() as session:
            report = create_due_step_mails(session, until=until)
        return {
            "created": report.created,
            "by_step": {str(k): v for k, v in report.by_step.items()},
        }

    create_step_mails()
