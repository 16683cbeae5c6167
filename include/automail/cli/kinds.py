"""`automail kinds …`: switch transactional mail kinds per shop (A1, B6) and run creation."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from automail.cli.times import parse_time
from automail.creation import create_transactional, set_kind, shop_by_code
from automail.db import session_scope
from automail.models import Shop, ShopMailKind
from automail.states import TRANSACTIONAL_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    kinds = sub.add_parser("kinds", help="mail kinds per shop").add_subparsers(
        dest="kinds_cmd", required=True
    )
    for name, enabled in (("enable", True), ("disable", False)):
        p = kinds.add_parser(name, help=f"{name} a kind for a shop ('all' for every one)")
        p.add_argument("--shop", required=True, help="shop code or 'all'")
        p.add_argument("--kind", required=True, help=f"{', '.join(TRANSACTIONAL_KINDS)} or 'all'")
        p.add_argument("--mode", choices=("auto", "manual"), help="B6: manual = send by hand")
        p.set_defaults(func=_switch, enabled=enabled)
    kinds.add_parser("list", help="switches per shop").set_defaults(func=_list)

    create = sub.add_parser("create", help="run transactional creation once, outside Airflow")
    create.add_argument("--start", help="interval start (ISO 8601, UTC); default: end - 1h")
    create.add_argument("--end", help="interval end (ISO 8601, UTC); default: now")
    create.set_defaults(func=_create)


def _switch(args: argparse.Namespace) -> None:
    kinds = TRANSACTIONAL_KINDS if args.kind == "all" else (args.kind,)
    with session_scope() as session:
        shops = (
            list(session.scalars(select(Shop).order_by(Shop.id)))
            if args.shop == "all"
            else [shop_by_code(session, args.shop)]
        )
        for shop in shops:
            for kind in kinds:
                row = set_kind(session, shop, kind, args.enabled, args.mode)
                state = "on" if row.enabled else "off"
                print(f"{shop.code}/{kind}: {state} ({row.mode})")


def _list(_args: argparse.Namespace) -> None:
    with session_scope() as session:
        rows = session.execute(
            select(Shop.code, ShopMailKind)
            .join(ShopMailKind)
            .order_by(Shop.code, ShopMailKind.kind)
        )
        for code, smk in rows:
            print(
                f"{code}/{smk.kind}: {'on' if smk.enabled else 'off'} mode={smk.mode} "
                f"enabled_at={smk.enabled_at} covered_until={smk.covered_until}"
            )


def _create(args: argparse.Namespace) -> None:
    end = parse_time("--end", args.end) if args.end else datetime.now(UTC)
    start = parse_time("--start", args.start) if args.start else end - timedelta(hours=1)
    with session_scope() as session:
        report = create_transactional(session, start, end, run_id="cli")
    for key, n in sorted(report.created.items()):
        print(f"{key}: {n} created ({report.held.get(key, 0)} held)")
    print(f"total: {report.total}")
