"""`automail db …`, `automail seed-demo`, `automail settings …`."""

from __future__ import annotations

import argparse
import json

from automail import migrate, settings
from automail.db import resolve_url, session_scope
from automail.sample_data import seed_demo


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="mail store schema").add_subparsers(dest="db_cmd", required=True)
    up = db.add_parser("upgrade", help="migrate the store to the newest schema")
    up.add_argument("--revision", default="head")
    up.set_defaults(func=_upgrade)
    down = db.add_parser("downgrade", help="migrate the store down (e.g. to base)")
    down.add_argument("revision")
    down.set_defaults(func=_downgrade)
    db.add_parser("current", help="show store URL and schema revision").set_defaults(func=_current)

    seed = sub.add_parser(
        "seed-demo", help="create demo shops; write their order/customer CSVs and import them"
    )
    seed.add_argument("--customers", type=int, default=1000, help="per shop")
    seed.add_argument("--orders", type=int, default=1500, help="per shop")
    seed.set_defaults(func=_seed)

    st = sub.add_parser("settings", help="global settings").add_subparsers(
        dest="settings_cmd", required=True
    )
    st.add_parser("list", help="every setting with its value").set_defaults(func=_settings_list)
    put = st.add_parser("set", help="set KEY to VALUE (JSON or plain text)")
    put.add_argument("key")
    put.add_argument("value")
    put.add_argument("--actor", default="cli")
    put.set_defaults(func=_settings_set)


def _upgrade(args: argparse.Namespace) -> None:
    migrate.upgrade(revision=args.revision)
    print(f"store at revision {migrate.current_revision()}")


def _downgrade(args: argparse.Namespace) -> None:
    migrate.downgrade(revision=args.revision)
    print(f"store at revision {migrate.current_revision()}")


def _current(_args: argparse.Namespace) -> None:
    from sqlalchemy.engine import make_url

    print(f"store: {make_url(resolve_url()).render_as_string(hide_password=True)}")
    print(f"revision: {migrate.current_revision()} (head: {migrate.head_revision()})")


def _seed(args: argparse.Namespace) -> None:
    with session_scope() as session:
        counts = seed_demo(session, customers_per_shop=args.customers, orders_per_shop=args.orders)
    print(
        f"seeded {counts.shops} shops, {counts.customers} customers "
        f"({counts.bad_addresses} with deliberately bad addresses), "
        f"{counts.orders} orders, {counts.shipments} shipments"
    )


def _settings_list(_args: argparse.Namespace) -> None:
    with session_scope() as session:
        for key, spec in sorted(settings.SETTINGS.items()):
            print(f"{key} = {json.dumps(settings.get(session, key))}    # {spec.help}")


def _settings_set(args: argparse.Namespace) -> None:
    with session_scope() as session:
        settings.put(session, args.key, settings.parse_cli_value(args.key, args.value), args.actor)
    print(f"{args.key} = {args.value}")
