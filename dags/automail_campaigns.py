"""Newsletters, every 5 minutes: moves each campaign through its statuses and releases
the newsletter mails that may go now. Campaigns are made with `automail campaigns create`.

**What it does.** scheduled → preparing (no more cancelling) → sending (audience
chosen, mails rendered) → sent → counting → counted; a campaign whose error rate is
too high is stopped. Mails are released only inside the category's allowed hours and
the shop's monthly quota; `automail_send` (the one send path, with its cap, pool,
relay and per-domain limits) sends them after transactional and step mails.

**When to unpause it.** When the shop starts sending newsletters, together with
`automail_send` (which actually sends). It starts paused.

**What it never does.** It never sends anything itself, never releases mails outside
allowed hours or over the quota, and never mails a customer who unsubscribed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, task


def _now(data_interval_end) -> datetime:  # noqa: ANN001
    """The run's moment: its interval end, never later than the wall clock."""
    wall = datetime.now(UTC)
    return min(data_interval_end, wall) if data_interval_end else wall


with DAG(
    dag_id="automail_campaigns",
    description="Newsletters only: campaign statuses, allowed hours, quota, newsletter sending",
    schedule=CronDataIntervalTimetable("*/5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    default_args={"retries": 1},  # retry delay: [core] default_task_retry_delay
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
