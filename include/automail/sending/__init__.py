"""Sending mails (SPEC A4, A8, B7–B10, F2–F4): claim, batch over one SMTP connection,
retry, cap with held + notice, exactly-once bookkeeping under crashes.

Entry points: `run_send_cycle` (a whole run, as the DAG does), `plan_run` +
`send_batch` (the DAG's two steps), `send_now` (send/resend by hand), `release_held`,
`recover`. See the module docstrings of batch.py and claim.py for the crash rules.
"""

from __future__ import annotations

from automail.sending.batch import send_batch
from automail.sending.claim import release_held
from automail.sending.cycle import (
    SendingStopped,
    claim_id_for_run,
    mail_server_stopped,
    plan_run,
    recover,
    run_send_cycle,
    send_now,
)
from automail.sending.smtp import SmtpConfig
from automail.sending.summary import SendSummary

__all__ = [
    "SendSummary",
    "SendingStopped",
    "SmtpConfig",
    "claim_id_for_run",
    "mail_server_stopped",
    "plan_run",
    "recover",
    "release_held",
    "run_send_cycle",
    "send_batch",
    "send_now",
]
