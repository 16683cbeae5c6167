"""`automail report`: what is in the store, by kind and status (the demo's closing report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import func, select

from automail.db import session_scope
from automail.models import Mail, SendAttempt
from automail.states import MAIL_KINDS, MAIL_STATUSES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="mails per kind and status")
    p.add_argument("--sink", type=Path, help="folder where the SMTP sink saved messages")
    p.set_defaults(func=run)


def status_table(session) -> dict[str, dict[str, int]]:  # noqa: ANN001
    table: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(Mail.kind, Mail.status, func.count()).group_by(Mail.kind, Mail.status)
    )
    for kind, status, n in rows:
        table.setdefault(kind, {})[status] = n
    return table


def run(args: argparse.Namespace) -> None:
    with session_scope() as session:
        table = status_table(session)
        attempts = session.scalar(select(func.count()).select_from(SendAttempt)) or 0
    statuses = [s for s in MAIL_STATUSES if any(s in row for row in table.values())]
    width = max([len(k) for k in table] + [8])
    print(f"{'kind':<{width}}  " + "  ".join(f"{s:>9}" for s in statuses) + "      total")
    for kind in [k for k in MAIL_KINDS if k in table]:
        row = table[kind]
        cells = "  ".join(f"{row.get(s, 0):>9}" for s in statuses)
        print(f"{kind:<{width}}  {cells}  {sum(row.values()):>9}")
    totals = {s: sum(r.get(s, 0) for r in table.values()) for s in statuses}
    print(
        f"{'all':<{width}}  "
        + "  ".join(f"{totals[s]:>9}" for s in statuses)
        + f"  {sum(totals.values()):>9}"
    )
    print(f"SMTP attempts recorded: {attempts}")
    if args.sink:
        files = sorted(args.sink.glob("*.eml")) if args.sink.is_dir() else []
        print(f"messages captured by the local SMTP server: {len(files)} in {args.sink}/")
