"""Creation of order-confirmation, shipping and follow-up mails (SPEC A1–A3, F1).

Creation only: this DAG never sends. It runs hourly AND whenever `automail_import`
reports changed orders or shipments (the Asset `automail_orders_changed`), so an
imported order's confirmation is created within a minute, not at the next hour.
A run plans one job per (shop, switched-on kind) with its window (automail.creation
.windows: a scheduled run covers its data interval plus the lookback on a kind's
first run; an asset-triggered or manual run, which has no data interval, covers from
the last covered time to now), creates the mails in parallel partitions
(CreateMailsOperator, mapped; any worker can run one) and then records how far
creation has covered. Every step is idempotent, so reruns and `airflow backfill
create` never make a mail twice. When it created mails it emits
`automail_mails_created`, which the (paused until ops unpause it) send DAG follows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["automail", "creation"],
    doc_md=__doc__,
) as dag:

    @task
    def plan_jobs(data_interval_start=None, data_interval_end=None) -> dict:  # noqa: ANN001
        from automail import settings
        from automail.creation.create import job_to_dict, plan
        from automail.creation.windows import run_interval
        from automail.db import session_scope

        with session_scope() as session:
            start, end = run_interval(
                session, data_interval_start, data_interval_end, datetime.now(UTC)
            )
            jobs = plan(session, start, end)
            partitions = settings.get(session, "creation_partitions")
        return {
            "jobs": [job_to_dict(j) for j in jobs],
            "partitions": partitions,
            "end": end.isoformat(),
        }

    @task
    def partitions_of(plan: dict) -> list[int]:
        return list(range(plan["partitions"])) if plan["jobs"] else []

    @task(trigger_rule="none_failed")
    def finish_run(plan: dict, reports) -> dict:  # noqa: ANN001
        from automail.creation.create import finish, job_from_dict
        from automail.db import session_scope

        with session_scope() as session:
            end = datetime.fromisoformat(plan["end"])
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
