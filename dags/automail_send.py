"""START SENDING HERE. The only DAG that sends order confirmations, shipping notices,
follow-ups and step mails to customers (every 5 minutes).

**What it does.** Each run takes the mails that are due (`unsent`, or `error` with a
retry left), up to 30,000 per run (more are held, with one notice to the shop), and
sends them in batches: one mapped `send_batch` task per batch, any worker, at most as
many at once as the pool `automail_smtp` has slots, one reused SMTP connection each
(Airflow connection `automail_smtp`; the mail store is connection `automail_db`).

**When to unpause it.** After creation has run and reviewers have pruned the pending
queue (Browse → Mail data). It starts paused. The first run starts within seconds of
unpausing, then one every 5 minutes and whenever creation emits
`automail_mails_created` (an import's confirmations go out within a minute); a run
sends what is due at that moment.

**What it never does.** It never sends while the setting `mail_server_stopped` is on
(`automail settings set mail_server_stopped true`: checked before the run and by every
batch), never sends a mail twice (a batch whose worker died leaves the mails it was
handing to the server `held` "in doubt" for a person to check, never resent), and
never creates mails. It also sends the newsletter mails `automail_campaigns` released (after
transactional and step mails), each shop through its own relay (`automail shops`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, AssetOrTimeSchedule, DeltaTriggerTimetable, task
from automail_assets import MAILS_CREATED
from automail_operators import SmtpSendOperator

SEND_EVERY = timedelta(minutes=5)  # the schedule; per-domain allowances scale with it

with DAG(
    dag_id="automail_send",
    description="START SENDING HERE: sends due mails in batches (paused at first; obeys mail_server_stopped)",
    schedule=AssetOrTimeSchedule(
        timetable=DeltaTriggerTimetable(SEND_EVERY), assets=[MAILS_CREATED]
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
    def plan(run_id=None, ti=None) -> list[dict]:  # noqa: ANN001
        """Recover leases, claim (cap → held + notice); the batches, each with its relay."""
        from automail.db import session_factory
        from automail.sending import plan_run

        p = plan_run(session_factory(), run_id, interval=SEND_EVERY)
        ti.xcom_push(key="summary", value=p.summary.as_dict())
        return p.mapped()

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
        retries=2,  # retry delay: [core] default_task_retry_delay (airflow.cfg.example)
    ).expand_kwargs(planned)
    mail_server_running() >> planned
    summarize(sent.output)
