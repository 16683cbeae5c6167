"""Store maintenance, every 5 minutes: adds newly created mails to the search indexes of
the Mail data screen, in small committed batches (by hand: `automail search-index`).

**When to unpause it.** Any time; searches are exact without it, only slower on a
large store. It starts paused.

**What it never does.** It never sends, creates or changes a mail's content or status.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

with DAG(
    dag_id="automail_maintenance",
    description="Index newly created mails for the search screen (never sends)",
    schedule=timedelta(minutes=5),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={"retries": 2},  # retry delay: [core] default_task_retry_delay
    tags=["automail", "maintenance", "search"],
    doc_md=__doc__,
) as dag:

    @task
    def search_index_pending() -> dict:
        from automail import search_index
        from automail.db import session_scope

        with session_scope() as session:
            report = search_index.run(session)
        print(f"automail search index: {report.as_dict()}")
        return report.as_dict()

    search_index_pending()
