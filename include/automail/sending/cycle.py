"""A send run (the `automail_send` DAG, `automail send run`) and send-by-hand (B4).

A run: stop if `mail_server_stopped` (A4) → lease recovery → claim due mails up to the
cap, holding the rest (B7) → cap and pending notices (B7, B8), claimed into the same
run → batches (F3), each sent by `send_batch` (a mapped task in the DAG).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from automail import settings
from automail.sending.batch import SessionFactory, send_batch
from automail.sending.claim import _set_claim, claim_for_run, claim_ids, recover_leases
from automail.sending.notices import cap_notices, pending_notices
from automail.sending.smtp import SmtpConfig
from automail.sending.summary import SendSummary
from automail.signing import secret_key

# Keep the number of mapped tasks far below Airflow's max_map_length (1024).
MAX_BATCHES = 200
DAG_ACTOR = "automail_send"


class SendingStopped(RuntimeError):
    """The global `mail_server_stopped` setting is on: nothing may be sent."""


def claim_id_for_run(run_id: str) -> str:
    return f"run:{run_id}"[:100]


def split_batches(
    ids: Sequence[int], batch_size: int, max_batches: int = MAX_BATCHES
) -> list[list[int]]:
    if not ids:
        return []
    size = max(batch_size, math.ceil(len(ids) / max_batches))
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


@dataclass
class RunPlan:
    claim_id: str
    batches: list[list[int]] = field(default_factory=list)
    summary: SendSummary = field(default_factory=SendSummary)


def mail_server_stopped(session_factory: SessionFactory) -> bool:
    with session_factory() as session:
        return bool(settings.get(session, "mail_server_stopped"))


def plan_run(
    session_factory: SessionFactory,
    run_id: str,
    now: datetime | None = None,
    actor: str = DAG_ACTOR,
) -> RunPlan:
    """Recover leases, claim (cap, rate limit), create notices; return the batches."""
    now = now or datetime.now(UTC)
    plan = RunPlan(claim_id_for_run(run_id))
    s = plan.summary
    with session_factory() as session:
        if settings.get(session, "mail_server_stopped"):
            s.stopped = True
            return plan
        secret_key()  # every mail is signed (bounce_links): no key, nothing is claimed
        cap = settings.get(session, "send_cap_per_run")
        lease = settings.get(session, "lease_seconds")
        max_retries = settings.get(session, "max_retries")
        rate = settings.get(session, "domain_rate_per_minute")
        batch_size = settings.get(session, "send_batch_size")
        # SQLite: a transaction that has read cannot wait for the write lock (it gets
        # "database is locked" at once when another run writes), so each locking step
        # below starts a fresh transaction with its lock.
        session.commit()
        recovery = recover_leases(session, now, actor)
        session.commit()
        s.leases_released, s.recovered_in_doubt = recovery.released, len(recovery.in_doubt)
        claim = claim_for_run(
            session,
            plan.claim_id,
            now,
            cap=cap,
            lease_seconds=lease,
            max_retries=max_retries,
            domain_rate_per_minute=rate,
            actor=actor,
        )
        notices = cap_notices(session, claim.held_by_shop, cap, run_id, now)
        notices += pending_notices(session, now, run_id)
        _set_claim(session, notices, plan.claim_id, now + timedelta(seconds=lease))
        session.commit()
        s.claimed = len(claim.claimed) + len(notices)
        s.held_cap, s.deferred_rate, s.notices = claim.held, claim.deferred, len(notices)
        plan.batches = split_batches(claim.claimed + notices, batch_size)
    return plan


def run_send_cycle(
    session_factory: SessionFactory,
    smtp: SmtpConfig,
    run_id: str,
    now: datetime | None = None,
) -> SendSummary:
    """One whole run in this process (CLI, tests, benchmark); the DAG maps the batches."""
    plan = plan_run(session_factory, run_id, now)
    summary = plan.summary
    for batch in plan.batches:
        summary.merge(send_batch(session_factory, batch, plan.claim_id, smtp, DAG_ACTOR, now))
    return summary


def send_now(
    session_factory: SessionFactory,
    mail_ids: list[int],
    actor: str,
    smtp: SmtpConfig | None = None,
    now: datetime | None = None,
) -> SendSummary:
    """Send / resend / bulk send by hand (B4), through the same batch code as the DAG.

    Allowed from unsent, error, held (send) and sent, cancelled (resend: back to unsent
    with an event and a fresh Message-ID, then a new attempt on the same mail). Mails
    that cannot be sent are listed in `summary.not_claimed` with the reason.
    Raises SendingStopped while `mail_server_stopped` is on.
    """
    now_ = now or datetime.now(UTC)
    claim_id = f"manual:{actor}:{uuid.uuid4().hex[:8]}"[:100]
    with session_factory() as session:
        if settings.get(session, "mail_server_stopped"):
            raise SendingStopped("the mail server is marked stopped (setting mail_server_stopped)")
        secret_key()  # every mail is signed (bounce_links): no key, nothing is claimed
        lease = settings.get(session, "lease_seconds")
        session.commit()  # SQLite: lock steps start fresh transactions (see plan_run)
        recover_leases(session, now_, actor)
        session.commit()
        claimed, refused = claim_ids(session, mail_ids, claim_id, now_, lease, actor)
        session.commit()
    summary = SendSummary(claimed=len(claimed), not_claimed=refused)
    if claimed:
        smtp = smtp or SmtpConfig.resolve()
        summary.merge(send_batch(session_factory, claimed, claim_id, smtp, actor, now))
    return summary


def recover(
    session_factory: SessionFactory, actor: str = "cli", now: datetime | None = None
) -> SendSummary:
    with session_factory() as session:
        rec = recover_leases(session, now or datetime.now(UTC), actor)
        session.commit()
    return SendSummary(leases_released=rec.released, recovered_in_doubt=len(rec.in_doubt))
