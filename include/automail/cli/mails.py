"""`automail mails …`: the mail data screen's search, detail and actions for scripts.

Same filters and the same code paths as the screen (automail.management); sending
goes through sending.send_now. The actor of an action is `--actor` (default: the OS
user), recorded in the audit trail like a screen user.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any

from automail import settings
from automail.cli import CliError
from automail.db import get_engine, session_factory, session_scope
from automail.management import actions
from automail.management.export import export_csv
from automail.management.history import send_history
from automail.management.search import (
    ALL,
    SORTS,
    FilterError,
    local_minute,
    matching_ids,
    parse_filter,
    search,
)
from automail.states import MAIL_KINDS, MAIL_STATUSES

FILTER_FIELDS = ("status", "kind", "to", "sent_from", "sent_to", "body", "shop")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return "cli"


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status",
        default=None,
        help=f"{ALL} or one of {', '.join(MAIL_STATUSES)} (default: unsent)",
    )
    p.add_argument("--kind", help=", ".join(MAIL_KINDS))
    p.add_argument("--to", help="To address, partial match")
    p.add_argument("--sent-from", dest="sent_from", help="YYYY-MM-DD, inclusive, shop time zone")
    p.add_argument("--sent-to", dest="sent_to", help="YYYY-MM-DD, inclusive")
    p.add_argument("--body", help="body substring (%% and _ are literal)")
    p.add_argument("--shop", help="shop code")


def _actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default=_os_user(), help="who is acting (default: OS user)")


def register(sub: argparse._SubParsersAction) -> None:
    mails = sub.add_parser("mails", help="search, inspect and act on mails (the mail data screen)")
    cmds = mails.add_subparsers(dest="mails_cmd", required=True)

    s = cmds.add_parser("search", help="search mails (same filters as the screen)")
    _add_filters(s)
    s.add_argument("--sort", choices=SORTS, default="created_desc")
    s.add_argument("--page", default="1")
    s.add_argument("--per-page", dest="per_page", default="50")
    s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    s.set_defaults(func=_search)

    show = cmds.add_parser("show", help="one mail: headers, bodies, attempts, events")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)

    for action in actions.ALL_ACTIONS:
        a = cmds.add_parser(
            action, help=f"{action} mails (allowed from: {', '.join(actions.ACTION_FROM[action])})"
        )
        a.add_argument("ids", nargs="*", type=int, help="mail ids")
        a.add_argument(
            "--all-matching",
            action="store_true",
            help="act on every mail the filters match (all pages)",
        )
        _add_filters(a)
        _actor(a)
        a.set_defaults(func=_act, action=action)

    c = cmds.add_parser("copy", help="copy a mail to a new To address (only To changes)")
    c.add_argument("id", type=int)
    c.add_argument("--to", required=True, dest="to_address")
    c.add_argument("--send", action="store_true", help="send the copy now")
    _actor(c)
    c.set_defaults(func=_copy)

    e = cmds.add_parser("export", help="write every mail matching the filters as CSV")
    _add_filters(e)
    e.add_argument("--out", required=True, help="CSV file to write")
    e.set_defaults(func=_export)

    h = cmds.add_parser("history", help="send history, newest first (A9)")
    h.add_argument("--shop")
    h.add_argument("--limit", type=int, default=None, help="default: setting history_limit")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=_history)


def _filter_params(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k, None) for k in (*FILTER_FIELDS, "sort", "page", "per_page")}


def _parse(session: Any, args: argparse.Namespace) -> Any:
    try:
        return parse_filter(_filter_params(args), tz=str(settings.get(session, "ui_timezone")))
    except FilterError as exc:
        raise CliError(str(exc)) from None


def _dump(obj: Any) -> str:
    return json.dumps(
        obj,
        ensure_ascii=False,
        default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
    )


def _search(args: argparse.Namespace) -> None:
    with session_scope() as session:
        f = _parse(session, args)
        try:
            result = search(session, f)
        except FilterError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            for r in result.rows:
                print(_dump(asdict(r)))
            return
        print(f"{result.total_label} mail(s) match; page {f.page} of {result.pages_label}")
        print(f"{'ID':>8}  {'CREATED':16}  {'KIND':18}  {'STATUS':9}  TO")
        for r in result.rows:
            print(
                f"{r.id:>8}  {local_minute(r.created_at, f.tz):16}  {r.kind:18}  {r.status:9}  {r.to_address}"
            )


def _show(args: argparse.Namespace) -> None:
    from automail.management.detail import get_detail

    with session_scope() as session:
        d = get_detail(session, args.id)
        tz = str(settings.get(session, "ui_timezone"))
    if args.json:
        print(_dump({**asdict(d), "row_action": d.row_action}))
        return
    print(f"mail {d.id}  {d.kind}  status={d.status}  shop={d.shop}  mode={d.mode}")
    print(
        f"created {local_minute(d.created_at, tz)}  sent {local_minute(d.sent_at, tz) or '-'}  tries {d.attempt_count}"
    )
    for name, value in d.headers:
        print(f"{name}: {value}")
    print("\n--- text body ---")
    print(d.body_text if d.body_text is not None else "(none)")
    print("--- html body ---")
    print(d.body_html if d.body_html is not None else "(none)")
    print("\n--- attempts ---")
    for a in d.attempts:
        print(
            f"#{a.attempt_no} {local_minute(a.started_at, tz)} {a.outcome} {a.smtp_code or ''} {a.enhanced_code or ''} {a.message or ''}"
        )
    print("--- events ---")
    for e in d.events:
        print(
            f"{local_minute(e.at, tz)} {e.event} {e.from_status or ''}->{e.to_status or ''} by {e.actor} {e.detail or ''}"
        )
    print("--- bounces ---")
    for b in d.bounces:
        print(
            f"{local_minute(b.received_at, tz)} {b.kind} {b.outcome} {b.smtp_code or ''} "
            f"{b.enhanced_code or ''} {b.reason or ''} "
            f"(matched by {b.matched_by}, {b.trust or 'no link'}: {b.effect_text}) "
            f"{b.diagnostic or ''}"
        )
    if not d.bounces:
        print("(none)")


def _report(result: actions.ActionResult) -> int:
    print(result.summary())
    for message in result.refused:
        print(f"  refused: {message}", file=sys.stderr)
    if result.refused_count > len(result.refused):
        print(f"  … and {result.refused_count - len(result.refused)} more refused", file=sys.stderr)
    return 0 if result.done or not result.refused_count else 1


def _act(args: argparse.Namespace) -> int:
    action = args.action
    audit = None
    if args.all_matching == bool(args.ids):
        raise CliError(f"{action}: give mail ids or --all-matching (not both, not neither)")
    factory = session_factory(get_engine())
    with factory() as session:
        if args.all_matching:
            f = _parse(session, args)
            ids = matching_ids(session, f, statuses=actions.ACTION_FROM[action])
            audit = {"scope": "all_matching", "filter": f.describe()}
        else:
            ids = args.ids
        if action in actions.SEND_ACTIONS:
            session.close()
            return _report(actions.send(factory, ids, args.actor, action=action, audit=audit))
        result = actions.change_status(session, action, ids, args.actor, audit=audit)
        session.commit()
    return _report(result)


def _copy(args: argparse.Namespace) -> int:
    factory = session_factory(get_engine())
    result = actions.copy_and_send(factory, args.id, args.to_address, args.actor, send_it=args.send)
    print(f"mail {args.id} copied to new mail {result.new_mail_id} ({args.to_address})")
    return _report(result) if args.send else 0


def _export(args: argparse.Namespace) -> None:
    with session_scope() as session:
        f = _parse(session, args)
        try:
            count = export_csv(session, f, args.out)
        except FilterError as exc:
            raise CliError(str(exc)) from None
    print(f"wrote {count} mail(s) to {args.out}")


def _history(args: argparse.Namespace) -> None:
    with session_scope() as session:
        rows = send_history(session, shop=args.shop, limit=args.limit)
        tz = str(settings.get(session, "ui_timezone"))
    for r in rows:
        if args.json:
            print(_dump(asdict(r)))
        else:
            print(
                f"{r.mail_id:>8}  {local_minute(r.attempted_at, tz)}  {r.shop:8}  {r.kind:18}  "
                f"{r.status:9}  {r.to_address}  {r.outcome} {r.smtp_code or ''} {r.enhanced_code or ''} {r.message or ''}"
            )
