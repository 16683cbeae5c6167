"""Newsletters (SPEC C5–C9): every 5 minutes, move campaigns through their statuses
and release the newsletter mails that may go now.

advance: scheduled → preparing (cancel lock) → sending (audience evaluated, mails
         rendered with the content of this moment) or failed; allowed hours and the
         monthly quota decide which mails are released.
finish:  sending → stopped (error rate) | sent → counting → counted, with the counts.
Released mails are sent by `automail_send`, the one send path for every kind (after
transactional and step mails, within its cap, pool and per-domain limits). This DAG
sends nothing itself; it starts paused like every automail DAG.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, task


def _now(data_interval_end) -> datetime:  # noqa: ANN001
    """The run's moment: its interval end, never later than the wall clock."""
    wall = datetime.now(UTC)
    return min(data_interval_end, wall) if data_interval_end else wall


with DAG(
    dag_id="automail_campaigns",
    description="Newsletters: status machine, allowed hours, quota, sending, counts",
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["automail", "newsletter"],
    doc_md=__doc__,
) as dag:

    @task
    def advance(data_interval_end=None) -> dict:  # noqa: ANN001
        from automail.campaigns import tick
        from automail.db import session_scope

        with session_scope() as session:
            return tick(session, _now(data_interval_end)).as_dict()

    @task
    def finish(data_interval_end=None) -> dict:  # noqa: ANN001
        from automail.campaigns import tick
        from automail.db import session_scope

        with session_scope() as session:
            return tick(session, _now(data_interval_end)).as_dict()

    advance() >> finish()
