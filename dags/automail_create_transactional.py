"""Hourly creation of order-confirmation, shipping and follow-up mails (SPEC A1–A3, F1).

Creation only: this DAG never sends. A run plans one job per (shop, switched-on kind)
with its window (the data interval, plus the lookback on a kind's first run, see
automail.creation.windows), creates the mails in parallel partitions (mapped tasks any
worker can run) and then records how far creation has covered. Every step is
idempotent, so reruns and `airflow backfill create` never make a mail twice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, task

with DAG(
    dag_id="automail_create_transactional",
    description="Create transactional mails from orders and shipments (never sends)",
    # Interval timetable: each run owns [start, end), which backfill relies on.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
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
        from automail.db import session_scope

        with session_scope() as session:
            jobs = plan(session, data_interval_start, data_interval_end)
            partitions = settings.get(session, "creation_partitions")
        return {"jobs": [job_to_dict(j) for j in jobs], "partitions": partitions}

    @task
    def partitions_of(plan: dict) -> list[int]:
        return list(range(plan["partitions"])) if plan["jobs"] else []

    @task
    def create_partition(partition: int, plan: dict, run_id=None) -> dict:  # noqa: ANN001
        from automail.creation.create import CreationReport, job_from_dict, run_job
        from automail.db import session_scope
        from automail.rendering import Renderer

        report = CreationReport()
        with session_scope() as session:
            renderer = Renderer(session)
            for job in map(job_from_dict, plan["jobs"]):
                report.merge(
                    run_job(
                        session,
                        job,
                        run_id or "manual",
                        partition=partition,
                        partitions=plan["partitions"],
                        renderer=renderer,
                    )
                )
        return {"created": report.created, "held": report.held}

    @task(trigger_rule="none_failed")
    def finish_run(plan: dict, reports, data_interval_end=None) -> dict:  # noqa: ANN001
        from automail.creation.create import finish, job_from_dict
        from automail.db import session_scope

        with session_scope() as session:
            finish(session, [job_from_dict(j) for j in plan["jobs"]], data_interval_end)
        created: dict[str, int] = {}
        for r in reports or []:
            for key, n in r["created"].items():
                created[key] = created.get(key, 0) + n
        return {"created": created, "total": sum(created.values())}

    planned = plan_jobs()
    reports = create_partition.partial(plan=planned).expand(partition=partitions_of(planned))
    finish_run(planned, reports)
