"""`automail search-index`: put newly created mails into the search indexes now (the
`automail_maintenance` DAG does the same every 5 minutes)."""

from __future__ import annotations

import argparse
import json

from automail import search_index
from automail.db import session_scope


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search-index",
        help="index mails created since the last run for the search screen",
    )
    p.add_argument("--limit", type=int, default=None, help="at most this many mails (default all)")
    p.add_argument("--batch", type=int, default=search_index.DEFAULT_BATCH, help="rows per commit")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    with session_scope() as session:
        report = search_index.run(session, limit=args.limit, batch=args.batch)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"indexed {report.indexed} mail(s); {report.pending} still pending")
