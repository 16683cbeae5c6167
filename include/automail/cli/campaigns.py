"""`automail campaigns …`: newsletters from the command line (SPEC C1–C10)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from automail import settings
from automail.campaigns import (
    audience_csv,
    campaign_audience,
    cancel_campaign,
    create_campaign,
    get_campaign,
    quota_status,
    tick,
)
from automail.campaigns.audience import count
from automail.cli import tracking_cmds
from automail.cli.times import parse_time
from automail.db import session_factory, session_scope
from automail.models import Campaign, CampaignCategory, CampaignEvent, Shop


def register(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("campaigns", help="newsletters (C1–C10)")
    cmd = top.add_subparsers(dest="campaigns_cmd", required=True)

    c = cmd.add_parser("create", help="schedule a newsletter")
    c.add_argument("--shop", required=True, help="shop code")
    c.add_argument("--name", required=True)
    c.add_argument("--subject", required=True, help="tags allowed, e.g. [TENPO_NAME]")
    body = c.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="body text (tags: [CUSTOMER_NAME], <#クーポンURL> ...)")
    body.add_argument("--body-file", type=Path, help="read the body from a file")
    c.add_argument("--format", dest="body_format", required=True, choices=("text", "html"))
    c.add_argument("--at", required=True, help="send time, ISO 8601; no zone = campaign_timezone")
    c.add_argument("--signature")
    c.add_argument("--category", help="campaign category name (allowed hours)")
    c.add_argument(
        "--filter", default="{}", help='audience filter JSON, e.g. {"prefectures":["東京都"]}'
    )
    c.add_argument("--mode", choices=("filter", "fixed"), default="filter")
    c.add_argument("--send-to", choices=("all", "checked"), default="all")
    c.add_argument(
        "--checked", default="", help="customer ids for --send-to checked, comma-separated"
    )
    c.add_argument("--no-dedupe", action="store_true", help="send to every customer of an address")
    c.add_argument("--skip-already-received", action="store_true")
    tracking_cmds.add_switches(c)
    c.set_defaults(func=_create)

    t = cmd.add_parser("test-send", help="send a test to comma-separated addresses now")
    t.add_argument("campaign_id", type=int)
    t.add_argument("--to", required=True)
    t.set_defaults(func=_test_send)

    a = cmd.add_parser("audience", help="who would receive it now; --csv to download")
    a.add_argument("campaign_id", type=int)
    a.add_argument("--csv", type=Path, help="write the audience to this CSV file ('-' = stdout)")
    a.set_defaults(func=_audience)

    x = cmd.add_parser("cancel", help="cancel (until the cancel lock)")
    x.add_argument("campaign_id", type=int)
    x.add_argument("--actor", default="cli")
    x.set_defaults(func=_cancel)

    s = cmd.add_parser("show", help="one campaign: status, counts, transitions")
    s.add_argument("campaign_id", type=int)
    s.set_defaults(func=_show)

    ls = cmd.add_parser("list", help="campaigns, newest first")
    ls.add_argument("--shop", help="shop code")
    ls.set_defaults(func=_list)

    q = cmd.add_parser("quota", help="monthly newsletter quota: used / limit / left")
    q.add_argument("--shop", required=True)
    q.add_argument("--month", help="YYYY-MM (default: this month)")
    q.set_defaults(func=_quota)

    cat = cmd.add_parser("category", help="create or update a category's allowed hours")
    cat.add_argument("name")
    cat.add_argument("--from-hour", type=int, default=0)
    cat.add_argument("--to-hour", type=int, default=24)
    cat.set_defaults(func=_category)

    r = cmd.add_parser("run", help="one pass of the status machine (+ --send), outside Airflow")
    r.add_argument(
        "--send", action="store_true", help="then one send run (every due kind, by priority)"
    )
    r.set_defaults(func=_run)
    tracking_cmds.add_campaign_commands(cmd)


def _shop(session, code: str) -> Shop:  # noqa: ANN001
    shop = session.scalar(select(Shop).where(Shop.code == code))
    if shop is None:
        raise LookupError(f"--shop: no shop with code {code!r}")
    return shop


def _json(field: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{field}: {text!r} is not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{field}: {text!r} is not a JSON object")
    return value


def _ids(field: str, text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not a comma-separated list of ids") from None


def _create(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop = _shop(session, args.shop)
        category_id = None
        if args.category:
            cat = session.scalar(
                select(CampaignCategory).where(CampaignCategory.name == args.category)
            )
            if cat is None:
                raise LookupError(f"--category: no category {args.category!r}")
            category_id = cat.id
        campaign = create_campaign(
            session,
            shop_id=shop.id,
            name=args.name,
            subject=args.subject,
            body=args.body if args.body is not None else args.body_file.read_text(encoding="utf-8"),
            body_format=args.body_format,
            scheduled_at=parse_time(
                "--at", args.at, ZoneInfo(settings.get(session, "campaign_timezone"))
            ),
            signature=args.signature,
            category_id=category_id,
            audience_mode=args.mode,
            audience_filter=_json("--filter", args.filter),
            send_to=args.send_to,
            checked_customer_ids=_ids("--checked", args.checked) if args.checked else None,
            dedupe_newest=False if args.no_dedupe else None,
            skip_already_received=args.skip_already_received,
            actor="cli",
            **tracking_cmds.switches(args),
        )
        print(
            f"campaign {campaign.id} scheduled for {campaign.scheduled_at.isoformat()}: {campaign.status_reason}"
        )


def _test_send(args: argparse.Namespace) -> None:
    from automail.campaigns.testsend import test_send

    ids = test_send(session_factory(), args.campaign_id, args.to, actor="cli")
    print(f"test mails {', '.join(map(str, ids))} sent to {args.to}")


def _audience(args: argparse.Namespace) -> None:
    with session_scope() as session:
        campaign = get_campaign(session, args.campaign_id)
        ids = campaign_audience(session, campaign, settings.get(session, "campaign_timezone"))
        if args.csv is None:
            print(f"campaign {campaign.id}: {count(session, ids)} recipients if sent now")
            return
        to_stdout = str(args.csv) == "-"
        text = audience_csv(session, ids, bom=not to_stdout)  # BOM: for Excel, not pipes
        if to_stdout:
            print(text, end="")
        else:
            args.csv.write_text(text, encoding="utf-8", newline="")
            print(f"wrote {text.count(chr(10)) - 1} recipients to {args.csv}")


def _cancel(args: argparse.Namespace) -> None:
    with session_scope() as session:
        campaign = cancel_campaign(session, args.campaign_id, actor=args.actor)
        print(f"campaign {campaign.id}: {campaign.status}")


def _show(args: argparse.Namespace) -> None:
    with session_scope() as session:
        c = get_campaign(session, args.campaign_id)
        print(f"campaign {c.id} {c.name!r} shop={c.shop_id} status={c.status}")
        print(
            f"  scheduled_at={c.scheduled_at.isoformat()} started_at={c.started_at and c.started_at.isoformat()}"
        )
        print(
            f"  audience={c.audience_mode} send_to={c.send_to} filter={json.dumps(c.audience_filter, ensure_ascii=False)}"
        )
        print(f"  targets={c.targets} succeeded={c.succeeded} errors={c.errors} unsent={c.unsent}")
        print(f"  reason: {c.status_reason}")
        for e in session.scalars(
            select(CampaignEvent)
            .where(CampaignEvent.campaign_id == c.id)
            .order_by(CampaignEvent.id)
        ):
            print(
                f"  {e.at.isoformat()} {e.from_status or '-'} -> {e.to_status} ({e.actor}): {e.reason}"
            )


def _list(args: argparse.Namespace) -> None:
    with session_scope() as session:
        query = select(Campaign).order_by(Campaign.scheduled_at.desc(), Campaign.id.desc())
        if args.shop:
            query = query.where(Campaign.shop_id == _shop(session, args.shop).id)
        for c in session.scalars(query):
            print(
                f"{c.id}\t{c.status}\t{c.scheduled_at.isoformat()}\t{c.targets}/{c.succeeded}/"
                f"{c.errors}/{c.unsent}\t{c.subject}"
            )


def _quota(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop = _shop(session, args.shop)
        used, limit, left = quota_status(session, shop.id, args.month or datetime.now(UTC))
        print(
            f"{shop.code} {args.month or 'this month'}: used {used}, limit "
            f"{'unlimited' if limit is None else limit}, left {'unlimited' if left is None else left}"
        )


def _category(args: argparse.Namespace) -> None:
    from automail.campaigns.hours import Window

    Window(args.from_hour, args.to_hour)  # validates the hours, naming the field
    with session_scope() as session:
        cat = session.scalar(select(CampaignCategory).where(CampaignCategory.name == args.name))
        if cat is None:
            cat = CampaignCategory(name=args.name)
            session.add(cat)
        cat.allowed_from_hour, cat.allowed_to_hour = args.from_hour, args.to_hour
        session.flush()
        print(f"category {cat.id} {cat.name}: {args.from_hour:02d}:00–{args.to_hour:02d}:00")


def _run(args: argparse.Namespace) -> None:
    with session_scope() as session:
        report = tick(session)
    print(json.dumps(report.as_dict(), ensure_ascii=False))
    if args.send:  # one send run, as automail_send does: every due kind, by priority
        from automail.sending import run_send_cycle
        from automail.sending.smtp import RelayConfigs

        run_id = f"cli-campaigns-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        result = run_send_cycle(session_factory(), RelayConfigs(), run_id)
        print(json.dumps(result.as_dict(), sort_keys=True))
        with session_scope() as session:
            print(json.dumps(tick(session).as_dict(), ensure_ascii=False))
