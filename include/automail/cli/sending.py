"""`automail send run|now|release|recover`: sending outside Airflow scheduling.

SMTP settings come from AIRFLOW_CONN_AUTOMAIL_SMTP (URI or JSON) or the Airflow
connection `automail_smtp`; the store from AUTOMAIL_DB_URL / `automail_db`.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from automail.cli import CliError
from automail.db import session_factory


def register(sub: argparse._SubParsersAction) -> None:
    send = sub.add_parser("send", help="send mails (one run, by hand, release, recover)")
    cmds = send.add_subparsers(dest="send_cmd", required=True)
    run = cmds.add_parser("run", help="one send cycle, as the automail_send DAG does")
    run.add_argument("--run-id", default=None, help="default: cli-<UTC time>")
    run.set_defaults(func=_run)
    now = cmds.add_parser("now", help="send / resend these mails by hand (B4)")
    now.add_argument("ids", nargs="+", type=int)
    now.add_argument("--actor", default="cli")
    now.set_defaults(func=_now)
    rel = cmds.add_parser("release", help="put held mails back to unsent")
    rel.add_argument("ids", nargs="+", type=int)
    rel.add_argument("--actor", default="cli")
    rel.set_defaults(func=_release)
    rec = cmds.add_parser("recover", help="release lapsed leases; hold in-doubt mails")
    rec.set_defaults(func=_recover)


def _print(data: dict) -> None:
    print(json.dumps(data, ensure_ascii=False, sort_keys=True))


def _run(args: argparse.Namespace) -> None:
    from automail.sending import run_send_cycle
    from automail.sending.smtp import RelayConfigs

    run_id = args.run_id or f"cli-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    _print(run_send_cycle(session_factory(), RelayConfigs(), run_id).as_dict())


def _now(args: argparse.Namespace) -> int:
    from automail.sending import SendingStopped, send_now

    try:
        summary = send_now(session_factory(), args.ids, args.actor)
    except SendingStopped as exc:
        raise CliError(str(exc)) from exc
    _print(summary.as_dict())
    return 1 if summary.not_claimed else 0


def _release(args: argparse.Namespace) -> int:
    from automail.sending import release_held

    with session_factory()() as session:
        released, refused = release_held(session, args.ids, args.actor)
        session.commit()
    _print({"released": released, "refused": {str(k): v for k, v in refused.items()}})
    return 1 if refused else 0


def _recover(_args: argparse.Namespace) -> None:
    from automail.sending import recover

    _print(recover(session_factory(), actor="cli").as_dict())
