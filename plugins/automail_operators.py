"""Automail's custom operators: thin wrappers over include/automail (logic lives there).

- CreateMailsOperator: render and store the transactional mails of one partition of a
  creation run (automail.creation); map it over partitions.
- RenderMailOperator: re-render stored mails from their current templates into
  MIME-ready content (automail.sending.render).
- SmtpSendOperator: send one claimed batch through the relay of Airflow connection
  `smtp_conn_id` (no credentials in code), on the relay's `connections` SMTP
  connections. Map it over the plan's batches, each with its relay:
  `SmtpSendOperator.partial(...).expand_kwargs(plan.mapped())`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

DAG_ACTOR = "automail_send"


class CreateMailsOperator(BaseOperator):
    """Render and store the transactional mails of one partition of a creation run.

    For every job of the plan (one per shop and switched-on kind, with its window), the
    events of this partition (``event id % partitions == partition``) are streamed in
    chunks, each mail is rendered from the shop's current template (reviewers see what
    will go out) and inserted under its idempotency key (shop, kind, order/shipment),
    so reruns and backfills never create a mail twice. A mail whose template is
    missing or broken is stored as ``held`` with the reason. Never sends.

    Map it over the partitions the plan asks for::

        CreateMailsOperator.partial(task_id="create_partition", plan=planned).expand(
            partition=partitions_of(planned)
        )

    :param plan: the run's plan, as ``plan_jobs`` returns it (usually an XComArg):
        ``{"jobs": [job dicts], "partitions": n, "end": ISO time}``. (templated)
    :param partition: the slice of every job's events this task creates, 0 to
        ``plan["partitions"] - 1``. (templated)
    :param created_by: recorded on each mail as who created it; default the DAG run id,
        ``"manual"`` outside a DAG run. (templated)
    :return: ``{"created": {"shop/kind": n}, "held": {"shop/kind": n}}`` (XCom).
    """

    template_fields: Sequence[str] = ("plan", "partition", "created_by")

    def __init__(
        self,
        *,
        plan: dict | Any,
        partition: int | Any,
        created_by: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.partition = partition
        self.created_by = created_by

    def execute(self, context: Any) -> dict:
        from automail.creation.create import CreationReport, job_from_dict, run_job
        from automail.db import session_scope
        from automail.rendering import Renderer

        created_by = self.created_by or context.get("run_id") or "manual"
        report = CreationReport()
        with session_scope() as session:
            renderer = Renderer(session)
            for job in map(job_from_dict, self.plan["jobs"]):
                report.merge(
                    run_job(
                        session,
                        job,
                        created_by,
                        partition=int(self.partition),
                        partitions=self.plan["partitions"],
                        renderer=renderer,
                    )
                )
        self.log.info("partition %s: created %s", self.partition, report.created)
        return {"created": report.created, "held": report.held}


class RenderMailOperator(BaseOperator):
    """Re-render stored mails from their current templates (after a template fix).

    Each mail keeps its row, key and status history; subject and bodies are rendered
    again from the template its shop, kind, device and stage select now. Mails whose
    template still fails are listed in the result and logged, not changed.

    :param mail_ids: ids of the mails to re-render. (templated)
    :param actor: recorded in each mail's history as who re-rendered it.
    :return: ``{"rerendered": [ids], "failed": {id: reason}}`` (XCom).
    """

    template_fields: Sequence[str] = ("mail_ids",)

    def __init__(self, *, mail_ids: list[int], actor: str = DAG_ACTOR, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mail_ids = mail_ids
        self.actor = actor

    def execute(self, context: Any) -> dict:
        from automail.db import session_factory
        from automail.sending.render import rerender_mails

        result = rerender_mails(session_factory(), list(self.mail_ids or []), self.actor)
        if result["failed"]:
            self.log.warning("not re-rendered: %s", result["failed"])
        return result


class SmtpSendOperator(BaseOperator):
    """Send one claimed batch of mails through one relay, exactly once per mail.

    Every attempt is committed as ``in_flight`` before the SMTP DATA and completed
    after it (exactly once across worker crashes, see automail.sending). Run it in
    the pool ``automail_smtp`` and map it over the plan's batches, each with its relay.

    :param batch: ids of the mails claimed for this task. (templated)
    :param smtp_conn_id: Airflow connection (type smtp) of the batch's relay: the shop's
        `smtp_conn_id`, default `automail_smtp`. Extras as the SMTP provider reads them,
        plus `ca_file`, `connections` (per batch) and `max_connections` (per relay).
        (templated)
    :param claim_id: the claim the batch was taken under; default derived from the
        DAG run id, as the plan task claims it. (templated)
    :return: the batch's send summary (XCom).
    """

    template_fields: Sequence[str] = ("batch", "claim_id", "smtp_conn_id")

    def __init__(
        self,
        *,
        batch: list[int],
        smtp_conn_id: str = "automail_smtp",
        claim_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.smtp_conn_id = smtp_conn_id
        self.claim_id = claim_id

    def execute(self, context: Any) -> dict:
        from automail.db import session_factory
        from automail.sending import SmtpConfig, claim_id_for_run, send_batch

        smtp = SmtpConfig.from_airflow(self.smtp_conn_id)
        claim_id = self.claim_id or claim_id_for_run(context["run_id"])
        summary = send_batch(session_factory(), list(self.batch or []), claim_id, smtp, DAG_ACTOR)
        self.log.info("batch of %d: %s", len(self.batch or []), summary.as_dict())
        return summary.as_dict()
