"""Tracking commands hung under `automail campaigns …` and `automail steps …` (issue 18):
the switches on create, `report ID [--csv]`, `resend-non-openers ID`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from automail import settings
from automail.cli.times import parse_time
from automail.db import session_scope
from automail.tracking.report import Report, campaign_report, percent, report_csv, sequence_report

COLUMNS = (
    ("delivered", "delivered"),
    ("unique_opens", "opens"),
    ("total_opens", "opens(total)"),
    ("open_rate", "open rate"),
    ("unique_clicks", "clicks"),
    ("total_clicks", "clicks(total)"),
    ("click_rate", "click rate"),
    ("click_to_open", "CTOR"),
    ("unsubscribes", "unsubscribes"),
    ("bounces", "bounces"),
    ("machine_opens", "machine opens"),
    ("machine_clicks", "machine clicks"),
)


def add_switches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track-opens", action="store_true", help="1×1 open pixel (HTML)")
    parser.add_argument("--track-clicks", action="store_true", help="signed redirect links")
    parser.add_argument(
        "--track-text-links", action="store_true", help="also rewrite URLs of a text body"
    )


def switches(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "track_opens": args.track_opens,
        "track_clicks": args.track_clicks,
        "track_text_links": args.track_text_links,
    }


def add_campaign_commands(cmd: argparse._SubParsersAction) -> None:
    r = cmd.add_parser("report", help="opens, clicks, rates per campaign and per link")
    r.add_argument("campaign_id", type=int)
    r.add_argument("--csv", type=Path, help="write CSV to this file ('-' = stdout)")
    r.set_defaults(func=lambda a: _report(a, campaign_report, a.campaign_id))

    n = cmd.add_parser("resend-non-openers", help="new campaign to those who did not open it")
    n.add_argument("campaign_id", type=int)
    n.add_argument("--at", help="send time, ISO 8601 (default: as soon as allowed)")
    n.add_argument("--subject", help="a new subject (default: the original's)")
    n.add_argument("--actor", default="cli")
    n.set_defaults(func=_resend)


def add_step_commands(cmd: argparse._SubParsersAction) -> None:
    r = cmd.add_parser("report", help="opens, clicks, rates per step and per link")
    r.add_argument("sequence_id", type=int)
    r.add_argument("--csv", type=Path, help="write CSV to this file ('-' = stdout)")
    r.set_defaults(func=lambda a: _report(a, sequence_report, a.sequence_id))


def format_report(report: Report) -> str:
    lines = [report.title]
    for row in report.rows:
        lines.append(f"  {row.label}")
        for attr, label in COLUMNS:
            value = getattr(row, attr)
            shown = percent(value) if attr.endswith(("rate", "open")) else str(value)
            lines.append(f"    {label:<15}{shown}")
    if report.links:
        lines.append("  links (clicks / total / machine / click rate):")
        for link in report.links:
            lines.append(
                f"    [{link.link_id}] {link.unique_clicks} / {link.total_clicks} / "
                f"{link.machine_clicks} / {percent(link.click_rate)}  {link.url}"
            )
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


def _report(args: argparse.Namespace, build, ident: int) -> None:  # noqa: ANN001
    with session_scope() as session:
        report = build(session, ident)
    if args.csv is None:
        print(format_report(report))
    elif str(args.csv) == "-":
        print(report_csv(report), end="")
    else:
        args.csv.write_text(report_csv(report), encoding="utf-8")
        print(f"wrote {args.csv}")


def _resend(args: argparse.Namespace) -> None:
    from automail.tracking.resend import resend_to_non_openers

    with session_scope() as session:
        at = None
        if args.at:
            at = parse_time("--at", args.at, ZoneInfo(settings.get(session, "campaign_timezone")))
        campaign = resend_to_non_openers(
            session, args.campaign_id, scheduled_at=at, subject=args.subject, actor=args.actor
        )
        print(
            f"campaign {campaign.id} scheduled for {campaign.scheduled_at.isoformat()}: "
            f"{campaign.status_reason}"
        )
