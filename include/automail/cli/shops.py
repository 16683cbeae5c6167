"""`automail shops …`: which relay each shop sends through (H1, seed 003)."""

from __future__ import annotations

import argparse

from sqlalchemy import select

from automail.db import session_scope
from automail.models import Shop
from automail.relays import MARKETPLACES, mask_addresses, set_shop_relay


def register(sub: argparse._SubParsersAction) -> None:
    shops = sub.add_parser("shops", help="shops' relays").add_subparsers(
        dest="shops_cmd", required=True
    )
    shops.add_parser("list", help="each shop's relay and marketplace").set_defaults(func=_list)
    p = shops.add_parser("set-relay", help="send a shop's mail through an Airflow connection")
    p.add_argument("code", help="shop code")
    p.add_argument("--relay", help="Airflow connection id (type smtp); omit for automail_smtp")
    p.add_argument("--marketplace", choices=MARKETPLACES, help="its relay rules (mask addresses)")
    p.set_defaults(func=_set_relay)


def _list(_args: argparse.Namespace) -> int:
    problems = 0
    with session_scope() as session:
        for shop in session.scalars(select(Shop).order_by(Shop.code)):
            print(f"{shop.code}: relay={shop.relay} marketplace={shop.marketplace or '-'}")
            for problem in mask_addresses(shop):
                print(f"  problem: {problem}")
                problems += 1
    return 1 if problems else 0


def _set_relay(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop = set_shop_relay(session, args.code, args.relay, args.marketplace)
        print(f"{shop.code}: relay={shop.relay} marketplace={shop.marketplace or '-'}")
