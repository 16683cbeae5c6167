"""`automail shops …`: each shop's relay (H1, seed 003) and deliverability settings
(DKIM key connection, charset, Reply-To / Cc / BCC lists; seed 002)."""

from __future__ import annotations

import argparse

from sqlalchemy import select

from automail.charset import CHARSETS
from automail.db import session_scope
from automail.deliverability import set_shop_charset, set_shop_dkim, set_shop_lists
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
    p = shops.add_parser("set-dkim", help="sign a shop's mail with a DKIM key (Airflow connection)")
    p.add_argument("code", help="shop code")
    p.add_argument(
        "--conn", help="Airflow connection id: login=selector, host=domain, password=PEM"
    )
    p.add_argument("--off", action="store_true", help="stop signing")
    p.set_defaults(func=_set_dkim)
    p = shops.add_parser("set-charset", help="the charset of a shop's mail")
    p.add_argument("code", help="shop code")
    p.add_argument("charset", choices=CHARSETS)
    p.set_defaults(func=_set_charset)
    p = shops.add_parser("set-lists", help="Reply-To, Cc and BCC lists (comma-separated)")
    p.add_argument("code", help="shop code")
    p.add_argument("--reply-to", help="one or more addresses")
    p.add_argument("--cc", help='addresses ("" clears)')
    p.add_argument("--bcc", help='addresses ("" clears)')
    p.set_defaults(func=_set_lists)


def _list(_args: argparse.Namespace) -> int:
    problems = 0
    with session_scope() as session:
        for shop in session.scalars(select(Shop).order_by(Shop.code)):
            print(
                f"{shop.code}: relay={shop.relay} marketplace={shop.marketplace or '-'} "
                f"dkim={shop.dkim_conn_id or '-'} charset={shop.charset} "
                f"reply_to={shop.reply_to} cc={shop.cc or '-'}"
            )
            for problem in mask_addresses(shop):
                print(f"  problem: {problem}")
                problems += 1
    return 1 if problems else 0


def _set_relay(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop = set_shop_relay(session, args.code, args.relay, args.marketplace)
        print(f"{shop.code}: relay={shop.relay} marketplace={shop.marketplace or '-'}")


def _set_dkim(args: argparse.Namespace) -> None:
    if bool(args.conn) == bool(args.off):
        raise ValueError("set-dkim: give --conn ID or --off")
    with session_scope() as session:
        shop = set_shop_dkim(session, args.code, None if args.off else args.conn)
        print(f"{shop.code}: dkim={shop.dkim_conn_id or '-'}")


def _set_charset(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop = set_shop_charset(session, args.code, args.charset)
        print(f"{shop.code}: charset={shop.charset}")


def _set_lists(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop = set_shop_lists(session, args.code, reply_to=args.reply_to, cc=args.cc, bcc=args.bcc)
        print(f"{shop.code}: reply_to={shop.reply_to} cc={shop.cc or '-'} bcc={shop.bcc or '-'}")
