"""Sending transactional and notice mails every 5 minutes (SPEC A4, A8, B7, B8, F3).

Also runs when creation emits `automail_mails_created` (an import's confirmations go
out within a minute); like the timed runs, only while ops have unpaused it.

Starts paused: pending mails pile up for review until ops unpause it (A4). Nothing is
sent while the global setting `mail_server_stopped` is on (first task short-circuits,
and every batch checks again). A run recovers lapsed leases, claims due mails up to
the cap (the rest are held, with a notice to the shop), and sends the claimed mails
in batches, one mapped task each over one reused SMTP connection, limited by the pool
`automail_smtp` (create it: `airflow pools set automail_smtp 4 "Automail SMTP connections"`).
SMTP settings: the Airflow connection `automail_smtp`; the mail store: `automail_db`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, DeltaTriggerTimetable, task
from automail_assets import MAILS_CREATED
from automail_operators import SmtpSendOperator

with DAG(
    dag_id="automail_send",
    description="Send due mails in batches (paused on creation; obeys mail_server_stopped)",
    schedule=AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(timedelta(minutes=5)), assets=[MAILS_CREATED]
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    tags=["automail", "sending"],
    doc_md=__doc__,
) as dag:

    @task.short_circuit
    def mail_server_running() -> bool:
        from automail.db import session_factory
        from automail.sending import mail_server_stopped

        return not mail_server_stopped(session_factory())

    @task
    def plan(run_id=None, ti=None) -> list[list[int]]:  # noqa: ANN001
        """Recover leases, claim (cap → held + notice), return the batches to map over."""
        from automail.db import session_factory
        from automail.sending import plan_run

        p = plan_run(session_factory(), run_id)
        ti.xcom_push(key="summary", value=p.summary.as_dict())
        return p.batches

    @task(trigger_rule="all_done")
    def summarize(batches: list[dict] | None, ti=None) -> dict:  # noqa: ANN001
        from automail.sending import SendSummary

        total = SendSummary.from_dict(ti.xcom_pull(task_ids="plan", key="summary") or {})
        for b in batches or []:
            total.merge(SendSummary.from_dict(b))
        print(f"automail_send summary: {total.as_dict()}")
        return total.as_dict()

    planned = plan()
    sent = SmtpSendOperator.partial(
        task_id="send_batch",
        pool="automail_smtp",
        retries=2,
        retry_delay=timedelta(minutes=1),
    ).expand(batch=planned)
    mail_server_running() >> planned
    summarize(sent.output)
