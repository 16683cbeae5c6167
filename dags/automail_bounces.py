"""Bounces every 15 minutes (SPEC E1–E3): read the bounce mailbox, record each bounce,
match it to its mail, and update the mail's bounce result and the address health.

The mailbox is the Airflow connection `automail_bounce_mailbox` (fs/path: a maildir or
folder of .eml files, recorded ones move to processed/; imap: UNSEEN messages, flagged
Seen once recorded), else the folder var/bounces. Idempotent: a message read twice
changes nothing. Bounces that match no mail are kept and counted as `unmatched`
(`automail bounces list --unmatched`). Same step by hand: `automail bounces ingest`.
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
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
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
