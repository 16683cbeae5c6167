"""`automail steps …`: step-mail sequences (SPEC D1, D2)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from automail.cli import tracking_cmds
from automail.cli.times import parse_time
from automail.db import session_scope
from automail.models import Mail, Shop, StepSequence
from automail.steps import START_EVENTS, add_step, create_due_step_mails, create_sequence


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("steps", help="step mails (D1, D2)")
    cmd = top.add_subparsers(dest="steps_cmd", required=True)

    c = cmd.add_parser("create", help="a new sequence")
    c.add_argument("--shop", required=True, help="shop code")
    c.add_argument("--name", required=True)
    c.add_argument("--event", required=True, choices=START_EVENTS, help="start event")
    c.add_argument("--filter", default="{}", help="audience filter JSON (as for campaigns)")
    c.add_argument("--starts-from", help="ignore start events before this (ISO 8601); default now")
    c.add_argument("--start-link", type=int, help="tracked link id, for --event click")
    c.add_argument("--allow-restart", action="store_true", help="each order/click starts it again")
    tracking_cmds.add_switches(c)
    c.set_defaults(func=_create)

    a = cmd.add_parser("add-step", help="append a step to a sequence")
    a.add_argument("sequence_id", type=int)
    a.add_argument("--offset", required=True, help="after the start event: 3d, 2h30m, 45m")
    a.add_argument("--subject", required=True)
    body = a.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="text body")
    body.add_argument("--html", help="HTML body")
    body.add_argument("--body-file", type=Path, help="text body from a file")
    a.set_defaults(func=_add_step)

    cmd.add_parser("list", help="sequences with their steps").set_defaults(func=_list)

    r = cmd.add_parser("run", help="create the step mails due by --until (default now)")
    r.add_argument("--until", help="ISO 8601 (UTC if no zone)")
    r.set_defaults(func=_run)
    tracking_cmds.add_step_commands(cmd)


def _create(args: argparse.Namespace) -> None:
    try:
        flt = json.loads(args.filter)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--filter: {args.filter!r} is not JSON ({exc.msg})") from None
    with session_scope() as session:
        shop = session.scalar(select(Shop).where(Shop.code == args.shop))
        if shop is None:
            raise LookupError(f"--shop: no shop with code {args.shop!r}")
        seq = create_sequence(
            session,
            shop_id=shop.id,
            name=args.name,
            start_event=args.event,
            audience_filter=flt,
            starts_from=parse_time("--starts-from", args.starts_from) if args.starts_from else None,
            start_link_id=args.start_link,
            allow_restart=args.allow_restart,
            **tracking_cmds.switches(args),
        )
        print(
            f"sequence {seq.id} {seq.name!r}: start={seq.start_event}, from {seq.starts_from.isoformat() if seq.starts_from else 'now'}"
        )


def _add_step(args: argparse.Namespace) -> None:
    text = args.body_file.read_text(encoding="utf-8") if args.body_file else args.body
    with session_scope() as session:
        step = add_step(
            session,
            args.sequence_id,
            offset=args.offset,
            subject=args.subject,
            body_text=text,
            body_html=args.html,
        )
        print(f"step {step.id}: #{step.position}, {step.offset_minutes} minutes after the start")


def _list(_args: argparse.Namespace) -> None:
    with session_scope() as session:
        for seq in session.scalars(select(StepSequence).order_by(StepSequence.id)):
            print(
                f"{seq.id}\t{seq.name}\tshop={seq.shop_id}\t{seq.start_event}\tactive={seq.active}"
            )
            for step in seq.steps:
                made = session.scalar(
                    select(func.count(Mail.id)).where(
                        Mail.kind == "step", Mail.source_key.like(f"step:{step.id}:%")
                    )
                )
                print(f"  #{step.position} +{step.offset_minutes}m\t{made} mails\t{step.subject}")


def _run(args: argparse.Namespace) -> None:
    until = parse_time("--until", args.until) if args.until else datetime.now(UTC)
    with session_scope() as session:
        report = create_due_step_mails(session, until=until)
    print(f"created {report.created} step mails due by {until.isoformat()}")
