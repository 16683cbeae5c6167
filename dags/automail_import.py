"""Imports new order, customer and shipment data every minute. Never sends.

**What it does.** Two sources, both idempotent (upserts keyed by shop and source id):
- the drop location (setting `import_drop_location`: a folder, default var/import, or
  any ObjectStoragePath URL such as s3://conn@bucket/prefix) holding
  `<shop>/<orders|customers|shipments>/*.csv`, each file imported once (checksum);
- the shops' SQL sources (`automail import sources add`), pulled incrementally by
  their watermark column.
Counts (read, inserted, updated, unchanged, rejected) go to the task log; refused rows
to `automail import rejects` and a `.rejects.csv` beside the file. When orders or
shipments changed, the task emits the Asset `automail_orders_changed`, which starts
`automail_create_transactional` at once. A file that failed as a whole (encoding,
missing column) fails the `check_failures` task after the others were imported.

**When to unpause it.** Once the shop's exports land in the drop location (or its SQL
source is added), before `automail_create_transactional`, so creation sees the orders.

**What it never does.** It never sends or creates mails, never imports the same file
twice, and never drops a refused row silently (every one is kept with its reason).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task
from automail_assets import ORDERS_CHANGED

with DAG(
    dag_id="automail_import",
    description="Import orders, customers, shipments (drop folder, SQL sources)",
    schedule=timedelta(minutes=1),  # with the asset chain: order to mail in ~1-2 min
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # one scanner at a time: a file is never read by two runs
    is_paused_upon_creation=True,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["automail", "import"],
    doc_md=__doc__,
) as dag:

    @task(outlets=[ORDERS_CHANGED])
    def import_new_data() -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from automail.db import get_engine
        from automail.imports.drop import scan_drop
        from automail.imports.sql_source import pull_all

        engine = get_engine()
        report = scan_drop(engine)
        report.results.extend(pull_all(engine))
        for result in report.results:
            print(result.summary())
        for problem in report.problems:
            print(f"problem: {problem}")
        summary = {
            "imports": len(report.results),
            "failed": [r.summary() for r in report.failed] + report.problems,
            "changed_orders": report.changed_orders,
        }
        if not report.changed_orders:
            # Skipped, so no asset event: creation is not started for nothing.
            if summary["failed"]:
                raise RuntimeError("; ".join(summary["failed"]))
            raise AirflowSkipException(
                f"no order or shipment changed ({summary['imports']} imports)"
            )
        return summary

    @task(trigger_rule="none_failed")
    def check_failures(summary: dict | None) -> None:
        if summary and summary["failed"]:
            raise RuntimeError("; ".join(summary["failed"]))

    check_failures(import_new_data())
