"""Sending state at a glance (issue 13 item 7): is `automail_send` paused, is the
`mail_server_stopped` switch on, when is the next send run due.

The DAG's state comes from Airflow's own metadata database through Airflow's models
and session (this code runs inside the API server); outside Airflow, or before the
DAG was ever parsed, the state says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from automail import settings

SEND_DAG = "automail_send"


@dataclass(frozen=True)
class SendingState:
    mail_server_stopped: bool
    dag_known: bool  # Airflow knows the DAG (parsed at least once)
    dag_paused: bool | None
    next_run_at: datetime | None  # when the scheduler creates the next run (unpaused only)
    dag_error: str | None = None  # why the DAG's state could not be read

    @property
    def sends_automatically(self) -> bool:
        return self.dag_known and self.dag_paused is False and not self.mail_server_stopped


def _dag_state() -> tuple[bool, bool | None, datetime | None, str | None]:
    try:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as af:
            row = af.execute(
                select(DagModel.is_paused, DagModel.next_dagrun_create_after).where(
                    DagModel.dag_id == SEND_DAG
                )
            ).first()
    except Exception as exc:  # no metadata DB here: say so, never guess
        return False, None, None, f"{type(exc).__name__}: {str(exc)[:200]}"
    if row is None:
        return False, None, None, None
    return True, bool(row[0]), row[1], None


def read(session: Session) -> SendingState:
    known, paused, next_run, error = _dag_state()
    return SendingState(
        mail_server_stopped=bool(settings.get(session, "mail_server_stopped")),
        dag_known=known,
        dag_paused=paused,
        next_run_at=next_run if known and paused is False else None,
        dag_error=error,
    )
