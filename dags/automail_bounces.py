"""Bounces, every 15 minutes: reads the bounce mailbox, records each bounce, marks the
mail it belongs to and updates the address's health (a permanent bounce cleans the
address; three failures in a row invalidate it).

The mailbox is the Airflow connection `automail_bounce_mailbox` (a maildir or folder of
.eml files, or an IMAP mailbox), else the folder var/bounces. By hand:
`automail bounces ingest`.

**When to unpause it.** Once `automail_send` sends and bounces reach the mailbox. It
starts paused.

**What it never does.** It never sends and never changes a mail's sent status; a
message read twice changes nothing; a bounce that matches no mail is kept as
`unmatched` (`automail bounces list --unmatched`), never dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

with DAG(
    dag_id="automail_bounces",
    description="Take in bounce mails: mail bounce results and address health (never sends)",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={"retries": 2},  # retry delay: [core] default_task_retry_delay
    tags=["automail", "bounces"],
    doc_md=__doc__,
) as dag:

    @task
    def ingest_bounces() -> dict:
        from automail.bounces.ingest import ingest_mailbox
        from automail.db import session_factory

        summary = ingest_mailbox(session_factory())
        print(f"automail bounces: {summary.as_dict()}")
        if summary.failed:
            # Recorded messages are done; the rest stay in the mailbox for the retry.
            raise RuntimeError(f"{len(summary.failed)} message(s) not recorded: {summary.failed}")
        return summary.as_dict()

    ingest_bounces()
