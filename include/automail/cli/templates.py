"""`automail templates list|show|set|reset|preview|tags|install-defaults` (A5, A6)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.db import session_scope
from automail.models import Shop, Template
from automail.rendering import (
    FIELDS,
    TAGS,
    RenderedMail,
    install_default_templates,
    list_templates,
    preview,
    reset_to_default,
    resolve_template,
    save_template,
)
from automail.states import DEVICES, MAIL_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("templates", help="mail templates (per shop, device, stage, carrier)")
    cmds = tp.add_subparsers(dest="templates_cmd", required=True)

    ls = cmds.add_parser("list", help="a shop's templates and the common defaults")
    ls.add_argument("--shop", help="shop code or id (default: common defaults only)")
    ls.add_argument("--kind", choices=MAIL_KINDS)
    ls.add_argument("--all", action="store_true", help="every shop's templates")
    ls.set_defaults(func=_list)

    show = cmds.add_parser("show", help="a template by id, or the one a slot resolves to")
    show.add_argument("id", nargs="?", type=int)
    _slot_args(show, required=False)
    show.set_defaults(func=_show)

    st = cmds.add_parser("set", help="save a template into a slot (validated)")
    _slot_args(st, required=True)
    st.add_argument("--subject", required=True)
    st.add_argument("--text-file", help="text body file ('-' = stdin)")
    st.add_argument("--html-file", help="HTML body file ('-' = stdin)")
    st.add_argument("--name")
    st.set_defaults(func=_set)

    rs = cmds.add_parser("reset", help="remove a shop's override: the common default applies")
    _slot_args(rs, required=True)
    rs.set_defaults(func=_reset)

    pv = cmds.add_parser("preview", help="render a template (sample data unless ids given)")
    pv.add_argument("id", type=int)
    pv.add_argument("--shop", help="shop code or id (default: the template's shop)")
    pv.add_argument("--customer", type=int, help="customer id")
    pv.add_argument("--order", type=int, help="order id")
    pv.add_argument("--shipment", type=int, help="shipment id")
    pv.add_argument("--sent", action="store_true", help="as sent: empty tags render empty")
    pv.set_defaults(func=_preview)

    cmds.add_parser("tags", help="the tags and fields templates may use").set_defaults(func=_tags)
    cmds.add_parser("install-defaults", help="create missing common defaults").set_defaults(
        func=_install
    )


def _slot_args(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--shop", help="shop code or id; omit for the common default")
    p.add_argument("--kind", choices=MAIL_KINDS, required=required)
    p.add_argument("--device", choices=DEVICES, default="pc")
    p.add_argument("--stage", type=int, default=0, help="0 any, 1 first purchase, 2 repeat")
    p.add_argument("--carrier", default="", help="shipping notice carrier code; '' = any")


def _shop_id(session: Session, ref: str | None) -> int | None:
    if ref is None:
        return None
    shop = session.scalar(select(Shop).where(Shop.code == ref))
    if shop is None and ref.isdigit():
        shop = session.get(Shop, int(ref))
    if shop is None:
        known = ", ".join(session.scalars(select(Shop.code).order_by(Shop.code))) or "none"
        raise LookupError(f"shop: no shop with code or id {ref!r} (known: {known})")
    return shop.id


def _owner(session: Session, t: Template) -> str:
    if t.shop_id is None:
        return "default"
    return session.scalar(select(Shop.code).where(Shop.id == t.shop_id)) or str(t.shop_id)


def _list(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop_id = _shop_id(session, args.shop)
        rows = list_templates(session, shop_id, args.kind, all_=args.all)
        if not rows:
            print("no templates (run `automail templates install-defaults`)")
            return
        print(f"{'id':>5}  {'owner':<10} {'kind':<19} {'device':<7} stage carrier   name")
        for t in rows:
            print(
                f"{t.id:>5}  {_owner(session, t):<10} {t.kind:<19} {t.device:<7} "
                f"{t.stage:>5} {t.carrier or '-':<9} {t.name}"
            )


def _print_template(session: Session, t: Template) -> None:
    print(f"id: {t.id}  owner: {_owner(session, t)}  kind: {t.kind}  device: {t.device}")
    print(f"stage: {t.stage}  carrier: {t.carrier or '(any)'}  name: {t.name}")
    print(f"updated: {t.updated_at:%Y-%m-%d %H:%M:%S} UTC")
    print(f"subject: {t.subject}")
    for label, body in (("text body", t.body_text), ("HTML body", t.body_html)):
        if body:
            print(f"--- {label} ---")
            print(body.rstrip("\n"))


def _show(args: argparse.Namespace) -> None:
    with session_scope() as session:
        if args.id is not None:
            t = session.get(Template, args.id)
            if t is None:
                raise LookupError(f"id: no template with id {args.id}")
        elif args.kind is not None:
            shop_id = _shop_id(session, args.shop)
            t = resolve_template(session, shop_id, args.kind, args.device, args.stage, args.carrier)
        else:
            raise ValueError("show: give a template id, or --kind (with --shop/--device/...)")
        _print_template(session, t)


def _read(path: str | None) -> str | None:
    if path is None:
        return None
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"body file {path!r}: {exc.strerror}") from None


def _set(args: argparse.Namespace) -> None:
    text, html = _read(args.text_file), _read(args.html_file)
    with session_scope() as session:
        shop_id = _shop_id(session, args.shop)
        t = save_template(
            session, shop_id, args.kind, args.device, args.stage, args.carrier,
            args.subject, text, html, name=args.name,
        )  # fmt: skip
        print(f"saved template {t.id} ({t.name})")


def _reset(args: argparse.Namespace) -> None:
    with session_scope() as session:
        shop_id = _shop_id(session, args.shop)
        if shop_id is None:
            raise ValueError("shop: reset needs --shop; the common default itself is not reset")
        removed = reset_to_default(
            session, shop_id, args.kind, args.device, args.stage, args.carrier
        )
        if removed:
            print(f"shop {args.shop}: override removed; the common default applies again")
        else:
            print(f"shop {args.shop}: no override in that slot; the common default already applies")


def _print_rendered(r: RenderedMail) -> None:
    print(f"subject: {r.subject}")
    print(f"template: {r.template_id}  device: {r.device}")
    if r.body_text is not None:
        print("--- text body ---")
        print(r.body_text.rstrip("\n"))
    if r.body_html is not None:
        print("--- HTML body ---")
        print(r.body_html.rstrip("\n"))


def _preview(args: argparse.Namespace) -> None:
    with session_scope() as session:
        r = preview(
            session,
            args.id,
            shop_id=_shop_id(session, args.shop),
            customer_id=args.customer,
            order_id=args.order,
            shipment_id=args.shipment,
            sent=args.sent,
        )
        _print_rendered(r)


def _tags(_args: argparse.Namespace) -> None:
    print("Shop tags (usable in subject and bodies; Jinja fields work too):")
    for t in TAGS:
        print(f"  {t.tag:<20} {{{{ {t.field} }}}}{' ' * max(1, 22 - len(t.field))}{t.label}")
    tagged = {t.field for t in TAGS}
    print("Jinja-only fields:")
    for field, label in FIELDS.items():
        if field not in tagged:
            print(f"  {{{{ {field} }}}}{' ' * max(1, 18 - len(field))}{label}")
    print("Filters: yen (2926 -> 2,926円), jst_date, jst_datetime, br (HTML line breaks)")
    print("An empty tag shows as written in previews and renders empty in sent mail.")


def _install(_args: argparse.Namespace) -> None:
    with session_scope() as session:
        n = install_default_templates(session)
    print(f"created {n} common default template(s)" if n else "common defaults already installed")
