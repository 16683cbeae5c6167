"""Store maintenance every 5 minutes: put newly created mails into the search screen's
trigram indexes (SPEC B2), off the creation path.

Creation inserts mails with `search_indexed = false`, so it never pays for the trigram
GIN indexes; this run flips them to true in committed batches (automail.search_index).
Search results are exact whether or not this has run; it only keeps searches fast.
Same step by hand: `automail search-index`.
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
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
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
