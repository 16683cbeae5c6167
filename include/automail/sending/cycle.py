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

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.models import DEFAULT_RELAY, Mail, Shop
from automail.sending.batch import SessionFactory, send_batch
from automail.sending.claim import (
    _set_claim,
    claim_for_run,
    claim_ids,
    recover_leases,
    release_claims,
)
from automail.sending.notices import cap_notices, pending_notices
from automail.sending.pacing import active_backoffs, pacing_table
from automail.sending.ratelimit import DomainLimiter
from automail.sending.smtp import RelayConfigs, Relays, SmtpConfig, as_relays
from automail.sending.status import CHUNK
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
    relays: list[str] = field(default_factory=list)  # the relay of each batch (H1)
    summary: SendSummary = field(default_factory=SendSummary)

    def mapped(self) -> list[dict]:
        """The DAG's `expand_kwargs`: one mapped send task per batch, with its relay."""
        return [
            {"batch": b, "smtp_conn_id": r} for b, r in zip(self.batches, self.relays, strict=True)
        ]


def batches_by_relay(
    session: Session, ids: Sequence[int], batch_size: int
) -> tuple[list[list[int]], list[str]]:
    """Split claimed mails into batches of one relay each (a shop's relay, H1)."""
    shops = {s.id: s.relay for s in session.scalars(select(Shop))}
    by_relay: dict[str, list[int]] = {}
    for start in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(Mail.id, Mail.shop_id).where(Mail.id.in_(ids[start : start + CHUNK]))
        )
        for mail_id, shop_id in rows:
            by_relay.setdefault(shops.get(shop_id, DEFAULT_RELAY), []).append(mail_id)
    batches: list[list[int]] = []
    relays: list[str] = []
    limit = max(1, MAX_BATCHES // max(1, len(by_relay)))
    for relay in sorted(by_relay):
        parts = split_batches(sorted(by_relay[relay]), batch_size, limit)
        batches += parts
        relays += [relay] * len(parts)
    return batches, relays


def mail_server_stopped(session_factory: SessionFactory) -> bool:
    with session_factory() as session:
        return bool(settings.get(session, "mail_server_stopped"))


def plan_run(
    session_factory: SessionFactory,
    run_id: str,
    now: datetime | None = None,
    actor: str = DAG_ACTOR,
    interval: timedelta | None = None,
) -> RunPlan:
    """Recover leases, claim (cap, domain pacing), create notices; return the batches.
    `interval`: time until the next run (the DAG's schedule; default: the setting
    `send_interval_minutes`), which scales each domain's per-minute allowance."""
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
        minutes = (
            interval.total_seconds() / 60
            if interval
            else settings.get(session, "send_interval_minutes")
        )
        limiter = DomainLimiter(
            settings.get(session, "domain_rate_per_minute"),
            minutes,
            pacing_table(session),
            active_backoffs(session, now),
        )
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
            limiter=limiter,
            actor=actor,
        )
        notices = cap_notices(session, claim.held_by_shop, cap, run_id, now)
        notices += pending_notices(session, now, run_id)
        _set_claim(session, notices, plan.claim_id, now + timedelta(seconds=lease))
        session.commit()
        s.claimed = len(claim.claimed) + len(notices)
        s.held_cap, s.deferred_rate, s.notices = claim.held, claim.deferred, len(notices)
        s.deferred_cap = claim.deferred_cap
        plan.batches, plan.relays = batches_by_relay(session, claim.claimed + notices, batch_size)
    return plan


def run_send_cycle(
    session_factory: SessionFactory,
    smtp: Relays,
    run_id: str,
    now: datetime | None = None,
) -> SendSummary:
    """One whole run in this process (CLI, tests, benchmark); the DAG maps the batches.
    `smtp`: one server for every relay, or `RelayConfigs` (each shop's relay)."""
    relays = as_relays(smtp)
    plan = plan_run(session_factory, run_id, now)
    summary = plan.summary
    unusable: dict[str, str] = {}
    for batch, relay in zip(plan.batches, plan.relays, strict=True):
        config = _relay_config(session_factory, relays, relay, batch, plan.claim_id)
        if isinstance(config, str):
            unusable[relay] = config
            continue
        summary.merge(send_batch(session_factory, batch, plan.claim_id, config, DAG_ACTOR, now))
    if unusable:  # the other relays' mails went; these wait, claims given back
        raise LookupError("; ".join(unusable.values()))
    return summary


def _relay_config(
    session_factory: SessionFactory,
    relays: RelayConfigs,
    relay: str,
    batch: list[int],
    claim_id: str,
) -> SmtpConfig | str:
    """The batch's relay settings, or why they cannot be had; then the batch's claims
    are given back at once, so its mails wait visibly in the queue (not until a lease
    lapses)."""
    try:
        return relays(relay)
    except (LookupError, ValueError) as exc:
        with session_factory() as session:
            release_claims(session, batch, claim_id)
            session.commit()
        return f"relay {relay!r}: {exc}"


def send_now(
    session_factory: SessionFactory,
    mail_ids: list[int],
    actor: str,
    smtp: Relays | None = None,
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
        batches, relay_ids = batches_by_relay(session, claimed, len(claimed) or 1)
    summary = SendSummary(claimed=len(claimed), not_claimed=refused)
    relays = as_relays(smtp)
    for batch, relay in zip(batches, relay_ids, strict=True):
        config = _relay_config(session_factory, relays, relay, batch, claim_id)
        if isinstance(config, str):
            summary.not_claimed.update(dict.fromkeys(batch, f"not sent: {config}"))
            continue
        summary.merge(send_batch(session_factory, batch, claim_id, config, actor, now))
    return summary


def recover(
    session_factory: SessionFactory, actor: str = "cli", now: datetime | None = None
) -> SendSummary:
    with session_factory() as session:
        rec = recover_leases(session, now or datetime.now(UTC), actor)
        session.commit()
    return SendSummary(leases_released=rec.released, recovered_in_doubt=len(rec.in_doubt))
