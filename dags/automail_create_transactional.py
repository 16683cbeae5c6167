"""Creates order-confirmation, shipping-notice and follow-up mails from orders and
shipments: hourly, and within a minute of an import that changed orders or shipments.
Never sends: the mails wait as `unsent` for review and for `automail_send`.

**What it does.** A run makes one job per shop and switched-on kind
(`automail kinds enable`), creates the mails in parallel partitions (mapped
`create_partition` tasks, `CreateMailsOperator`, any worker) and records how far each
kind is covered. A scheduled run covers its hour; a run started by hand (▷ Trigger,
`airflow dags trigger`) or by `automail_import` (the Asset `automail_orders_changed`)
covers from where coverage stopped up to now. A kind's first run looks back (1 week
for order confirmations and shipping notices, 3 months for follow-ups). When it
created mails it emits `automail_mails_created`, which `automail_send` follows.

**When to unpause it.** First of all the DAGs, once the kinds are switched on per shop.
Sending stays off until `automail_send` is unpaused.

**What it never does.** It never sends, and never makes a mail twice: reruns, retries
after a worker died mid-partition and `airflow backfill create` over any range create
exactly the missing mails. Deleted mails keep their row, so they never come back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, task
from automail_assets import MAILS_CREATED, ORDERS_CHANGED
from automail_operators import CreateMailsOperator

with DAG(
    dag_id="automail_create_transactional",
    description="Create transactional mails from orders and shipments (never sends)",
    # Interval timetable: each scheduled run owns [start, end), which backfill relies on.
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        assets=[ORDERS_CHANGED],
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    is_paused_upon_creation=True,
    default_args={"retries": 2},  # retry delay: [core] default_task_retry_delay
    tags=["automail", "creation"],
    doc_md=__doc__,
) as dag:

    @task
    def plan_jobs(data_interval_start=None, data_interval_end=None) -> dict:  # noqa: ANN001
        from automail import settings
        from automail.creation.create import job_to_dict, plan
        from automail.creation.windows import run_interval
        from automail.db import session_scope

        start, end = run_interval(data_interval_start, data_interval_end)
        with session_scope() as session:
            jobs = plan(session, start, end)
            partitions = settings.get(session, "creation_partitions")
        jobs_ = [job_to_dict(j) for j in jobs]
        return {"jobs": jobs_, "partitions": partitions, "end": end.isoformat()}

    @task
    def partitions_of(plan: dict) -> list[int]:
        return list(range(plan["partitions"])) if plan["jobs"] else []

    @task(trigger_rule="none_failed")
    def finish_run(plan: dict, reports) -> dict:  # noqa: ANN001
        from automail.creation.create import finish, job_from_dict
        from automail.db import session_scope

        end = datetime.fromisoformat(plan["end"])
        with session_scope() as session:
            finish(session, [job_from_dict(j) for j in plan["jobs"]], end)
        created: dict[str, int] = {}
        for r in reports or []:
            for key, n in r["created"].items():
                created[key] = created.get(key, 0) + n
        return {"created": created, "total": sum(created.values())}

    @task(outlets=[MAILS_CREATED])
    def announce(summary: dict) -> int:
        """Emit the asset only when there is something new to send."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not summary["total"]:
            raise AirflowSkipException("no new mails: the send DAG is not triggered")
        return summary["total"]

    planned = plan_jobs()
    reports = CreateMailsOperator.partial(task_id="create_partition", plan=planned).expand(
        partition=partitions_of(planned)
    )
    announce(finish_run(planned, reports.output))
