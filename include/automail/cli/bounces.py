"""`automail bounces ingest|list` and `automail addresses show|reset` (SPEC E1–E3).

ingest: the configured mailbox (Airflow connection `automail_bounce_mailbox`, else the
folder var/bounces), or `--dir DIR` (a maildir or folder of .eml files; recorded files
move to DIR/processed/), or `--imap` (the connection, which must be an IMAP one).
Prints the run's summary as one JSON line; exit 1 when a message could not be recorded.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from automail.cli import CliError
from automail.db import session_factory


def register(sub: argparse._SubParsersAction) -> None:
    bounces = sub.add_parser("bounces", help="take in bounce mails; list bounces (E1)")
    cmds = bounces.add_subparsers(dest="bounces_cmd", required=True)
    ing = cmds.add_parser("ingest", help="read the bounce mailbox and record what came back")
    where = ing.add_mutually_exclusive_group()
    where.add_argument("--dir", help="a maildir or a folder of .eml files")
    where.add_argument("--imap", action="store_true", help="the IMAP connection")
    ing.add_argument("--limit", type=int, default=None, help="at most this many messages")
    ing.set_defaults(func=_ingest)
    lst = cmds.add_parser("list", help="newest bounces")
    lst.add_argument("--unmatched", action="store_true", help="only those matching no mail")
    lst.add_argument("--mail", type=int, default=None, help="only this mail's bounces")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=_list)

    addrs = sub.add_parser("addresses", help="address health: cleaned / invalid flags (E3)")
    acmds = addrs.add_subparsers(dest="addresses_cmd", required=True)
    show = acmds.add_parser("show", help="flags, reason and recent bounces of an address")
    show.add_argument("address")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)
    reset = acmds.add_parser("reset", help="mark the address valid and not cleaned again")
    reset.add_argument("address")
    reset.add_argument("--actor", default="cli")
    reset.set_defaults(func=_reset)


def _source(args: argparse.Namespace):  # noqa: ANN202
    from automail.bounces.mailbox import FolderSource, ImapSource, open_source

    if args.dir:
        return FolderSource(args.dir)
    source = open_source()
    if args.imap and not isinstance(source, ImapSource):
        source.close()
        raise CliError(
            "--imap: the connection automail_bounce_mailbox is not an IMAP connection "
            f"(it reads {source.name})"
        )
    return source


def _ingest(args: argparse.Namespace) -> int:
    from automail.bounces.ingest import ingest_mailbox

    summary = ingest_mailbox(session_factory(), _source(args), limit=args.limit)
    print(json.dumps(summary.as_dict(), ensure_ascii=False, sort_keys=True))
    return 1 if summary.failed else 0


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _bounce_dict(b) -> dict:  # noqa: ANN001
    return {
        "id": b.id,
        "received_at": b.received_at.isoformat() if b.received_at else None,
        "kind": b.kind,
        "recipient": b.recipient,
        "outcome": b.outcome,
        "smtp_code": b.smtp_code,
        "enhanced_code": b.enhanced_code,
        "reason": b.reason,
        "mail_id": b.mail_id,
        "matched_by": b.matched_by,
        "effect": b.effect,
        "trust": b.trust,
        "original_message_id": b.original_message_id,
        "source": b.source,
        "diagnostic": b.diagnostic,
    }


def _print_bounces(rows: list, as_json: bool) -> None:
    if as_json:
        for b in rows:
            print(json.dumps(_bounce_dict(b), ensure_ascii=False))
        return
    print(
        f"{'ID':>6}  {'RECEIVED':16}  {'OUTCOME':7}  {'CODE':10}  {'MAIL':>8}  RECIPIENT / REASON"
    )
    from automail.bounces.ingest import effect_text

    for b in rows:
        code = " ".join(str(c) for c in (b.smtp_code, b.enhanced_code) if c) or "-"
        mail = str(b.mail_id) if b.mail_id is not None else "unmatched"
        print(
            f"{b.id:>6}  {_time(b.received_at):16}  {b.outcome:7}  {code:10}  {mail:>8}  "
            f"{b.recipient or '(no recipient)'}  {b.reason or ''} "
            f"[{b.kind}, {effect_text(b.effect, b.trust)}]"
        )


def _list(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from automail.models import Bounce

    with session_factory()() as session:
        query = select(Bounce).order_by(Bounce.received_at.desc(), Bounce.id.desc())
        if args.unmatched:
            query = query.where(Bounce.mail_id.is_(None))
        if args.mail is not None:
            query = query.where(Bounce.mail_id == args.mail)
        rows = list(session.scalars(query.limit(args.limit)))
        if not args.json:
            label = "unmatched bounce(s)" if args.unmatched else "bounce(s)"
            print(f"{len(rows)} {label} (newest first, at most {args.limit})")
        _print_bounces(rows, args.json)


def _show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from automail.bounces.ingest import bounces_for_address
    from automail.customers import address_health

    with session_factory()() as session:
        health = address_health(session, args.address)
        recent = bounces_for_address(session, args.address, limit=10)
        if args.json:
            print(
                json.dumps(
                    {
                        "address": args.address,
                        "customers": [asdict(h) for h in health],
                        "bounces": [_bounce_dict(b) for b in recent],
                    },
                    ensure_ascii=False,
                )
            )
            return 0 if health else 1
        if not health:
            print(f"no customer has the address {args.address!r}")
        for h in health:
            state = "valid" if h.valid else "INVALID"
            cleaned = "CLEANED" if h.cleaned else "not cleaned"
            print(
                f"customer {h.customer_id} (shop {h.shop_id}, {h.name}) <{h.email}>: {state}, "
                f"{cleaned}, failures in a row: {h.consecutive_failures}"
            )
            if h.reason:
                print(f"  reason: {h.reason}")
        if recent:
            print("recent bounces:")
            _print_bounces(recent, False)
        return 0 if health else 1


def _reset(args: argparse.Namespace) -> None:
    from automail.customers import reset_address

    with session_factory()() as session:
        before = reset_address(session, args.address, args.actor)
        session.commit()
    for h in before:
        print(
            f"customer {h.customer_id} <{h.email}>: valid and not cleaned again "
            f"(was valid={h.valid} cleaned={h.cleaned} failures={h.consecutive_failures})"
        )
