"""Automail's custom operators: thin wrappers over include/automail (logic lives there).

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


class RenderMailOperator(BaseOperator):
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

    :param batch: ids of mails claimed by this run (the plan's output).
    :param smtp_conn_id: Airflow connection (type smtp) of the batch's relay; the shop's
        `smtp_conn_id`, default `automail_smtp`. Extras as the SMTP provider reads them,
        plus `ca_file`, `connections` (per batch) and `max_connections` (per relay).
    :param claim_id: the claim the mails were taken under; default: this DAG run's.
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
