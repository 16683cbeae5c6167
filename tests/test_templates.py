"""Template slots on both stores (A5): resolution on every axis, overrides and reset,
defaults, the Renderer on ORM instances and plain Rows, re-render, preview and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.cli import main as cli_main
from automail.models import Customer, Mail, MailEvent, Order, OrderLine, Shop, Template
from automail.rendering import (
    DEFAULT_TEMPLATES,
    Renderer,
    TemplateError,
    TemplateNotFound,
    install_default_templates,
    preview,
    preview_mail,
    rerender_mail,
    reset_to_default,
    resolve_template,
    save_template,
)
from automail.sample_data import make_customer, make_order, make_shipment, make_shop

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def _save(session: Session, shop_id, kind, device="pc", stage=0, carrier="", label=None):
    label = label or f"{shop_id}/{kind}/{device}/{stage}/{carrier}"
    return save_template(session, shop_id, kind, device, stage, carrier, label, "本文", None)


def test_install_defaults_is_idempotent(session: Session) -> None:
    assert install_default_templates(session) == len(DEFAULT_TEMPLATES) == 9
    assert install_default_templates(session) == 0
    rows = session.scalars(select(Template)).all()
    assert len(rows) == 9 and all(r.shop_id is None for r in rows)
    slots = {(r.kind, r.device, r.stage, r.carrier) for r in rows}
    assert ("order_confirmation", "mobile", 2, "") in slots
    assert ("shipping_notice", "pc", 0, "") in slots
    assert ("notice", "pc", 0, "") in slots


def test_shop_override_wins_and_reset_restores_the_default(session: Session) -> None:
    shop = make_shop(session)
    other = make_shop(session, "kitchen", "台所道具の田中商店")
    default = _save(session, None, "follow_up", label="default")
    override = _save(session, shop.id, "follow_up", label="shop's own")
    assert resolve_template(session, shop.id, "follow_up", "pc", 0, "").id == override.id
    assert resolve_template(session, other.id, "follow_up", "pc", 0, "").id == default.id

    assert reset_to_default(session, shop.id, "follow_up", "pc", 0, "") is True
    assert resolve_template(session, shop.id, "follow_up", "pc", 0, "").id == default.id
    assert reset_to_default(session, shop.id, "follow_up", "pc", 0, "") is False
    assert session.get(Template, default.id) is not None  # the default itself stays


def test_device_axis(session: Session) -> None:
    shop = make_shop(session)
    pc = _save(session, None, "follow_up", "pc")
    mobile = _save(session, None, "follow_up", "mobile")
    shop_mobile = _save(session, shop.id, "follow_up", "mobile")
    assert resolve_template(session, shop.id, "follow_up", "pc", 0, "").id == pc.id
    assert resolve_template(session, shop.id, "follow_up", "mobile", 0, "").id == shop_mobile.id
    assert resolve_template(session, None, "follow_up", "mobile", 0, "").id == mobile.id
    # With no mobile template anywhere, a mobile address gets the PC one.
    session.delete(mobile)
    session.delete(shop_mobile)
    session.flush()
    assert resolve_template(session, shop.id, "follow_up", "mobile", 0, "").id == pc.id


def test_stage_axis_with_configurable_switch(session: Session) -> None:
    shop = make_shop(session)
    customer = make_customer(session, shop)
    install_default_templates(session)
    first = resolve_template(session, None, "order_confirmation", "pc", 1, "")
    repeat = resolve_template(session, None, "order_confirmation", "pc", 2, "")
    assert (first.stage, repeat.stage) == (1, 2)

    numbers = iter(range(1000))

    def used(purchase_count: int) -> int:
        number = f"TEA-{next(numbers)}"
        order = make_order(session, customer, T0, number=number, purchase_count=purchase_count)
        return (
            Renderer(session).render("order_confirmation", shop, customer, order=order).template_id
        )

    assert [used(1), used(2), used(3)] == [first.id, repeat.id, repeat.id]
    shop.repeat_stage_from = 3  # repeat-customer mail from the 3rd purchase on
    session.flush()
    assert [used(1), used(2), used(3), used(7)] == [first.id, first.id, repeat.id, repeat.id]


def test_stage_falls_back_to_any_and_shop_any_beats_default_stage(session: Session) -> None:
    shop = make_shop(session)
    any_stage = _save(session, None, "order_confirmation", stage=0)
    assert resolve_template(session, shop.id, "order_confirmation", "pc", 2, "").id == any_stage.id
    first = _save(session, None, "order_confirmation", stage=1)
    assert resolve_template(session, shop.id, "order_confirmation", "pc", 1, "").id == first.id
    assert resolve_template(session, shop.id, "order_confirmation", "pc", 2, "").id == any_stage.id
    shop_any = _save(session, shop.id, "order_confirmation", stage=0)
    assert resolve_template(session, shop.id, "order_confirmation", "pc", 1, "").id == shop_any.id


def test_carrier_axis(session: Session) -> None:
    shop = make_shop(session)
    customer = make_customer(session, shop)
    order = make_order(session, customer, T0)
    generic = _save(session, None, "shipping_notice")
    sagawa = _save(session, None, "shipping_notice", carrier="sagawa")
    shop_yamato = _save(session, shop.id, "shipping_notice", carrier="yamato")
    renderer = Renderer(session)

    def used(carrier: str) -> int:
        shipment = make_shipment(session, order, T0, carrier=carrier)
        return renderer.render(
            "shipping_notice", shop, customer, order=order, shipment=shipment
        ).template_id

    assert used("sagawa") == sagawa.id
    assert used("yamato") == shop_yamato.id
    assert used("japanpost") == generic.id


def test_nothing_fits_is_a_clear_error(session: Session) -> None:
    shop = make_shop(session)
    _save(session, shop.id, "order_confirmation", stage=2)
    with pytest.raises(TemplateNotFound) as err:
        resolve_template(session, shop.id, "order_confirmation", "mobile", 1, "")
    message = str(err.value)
    for part in (f"shop {shop.id}", "'order_confirmation'", "'mobile'", "stage 1", "carrier ''"):
        assert part in message


def test_save_rejects_bad_slots_and_bad_templates(session: Session) -> None:
    with pytest.raises(ValueError, match="kind: 'newsletter'"):
        save_template(session, None, "newsletter", "pc", 0, "", "s", "b", None)
    with pytest.raises(ValueError, match="device: 'tablet'"):
        save_template(session, None, "follow_up", "tablet", 0, "", "s", "b", None)
    with pytest.raises(ValueError, match="stage: 1 is only for order_confirmation"):
        save_template(session, None, "follow_up", "pc", 1, "", "s", "b", None)
    with pytest.raises(ValueError, match="carrier: 'yamato' is only for shipping_notice"):
        save_template(session, None, "follow_up", "pc", 0, "yamato", "s", "b", None)
    with pytest.raises(TemplateError, match="body_text: line 3"):
        save_template(session, None, "follow_up", "pc", 0, "", "s", "a\nb\n{{ nope }}", None)
    assert session.scalars(select(Template)).all() == []


def test_save_replaces_the_slot_and_renderer_sees_new_text(session: Session) -> None:
    shop = make_shop(session)
    customer = make_customer(session, shop)
    t1 = save_template(session, None, "follow_up", "pc", 0, "", "v1 [TENPO_NAME]", "x", None)
    renderer = Renderer(session)
    assert renderer.render("follow_up", shop, customer).subject == "v1 お茶の山田園"
    t2 = save_template(session, None, "follow_up", "pc", 0, "", "v2 [TENPO_NAME]", "x", None)
    assert t2.id == t1.id
    assert len(session.scalars(select(Template)).all()) == 1
    # Same run, same template object: the cache key (id, updated_at) changed with the save.
    assert renderer.render("follow_up", shop, customer).subject == "v2 お茶の山田園"


def test_renderer_on_plain_rows_and_mobile_device(session: Session) -> None:
    install_default_templates(session)
    shop = make_shop(session, signature_mobile="--\n山田園 携帯")
    customer = make_customer(session, shop, email="hanako@docomo.ne.jp", name="<b>花子</b>")
    order = make_order(session, customer, T0, number="TEA-1")
    session.add(
        OrderLine(order_id=order.id, sku="CUP-010", name="湯呑み", quantity=3, unit_price=2750)
    )
    session.commit()
    shop_row = session.execute(
        select(Shop.id, Shop.name, Shop.from_name, Shop.signature_pc, Shop.signature_mobile,
               Shop.coupon_url, Shop.repeat_stage_from).where(Shop.id == shop.id)
    ).one()  # fmt: skip
    cust_row = session.execute(
        select(Customer.name, Customer.email, Customer.prefecture).where(Customer.id == customer.id)
    ).one()
    order_row = session.execute(select(Order).where(Order.id == order.id)).scalar_one()
    order_cols = session.execute(
        select(Order.order_number, Order.ordered_at, Order.purchase_count, Order.total,
               Order.subtotal, Order.tax, Order.shipping_fee, Order.payment_method,
               Order.ship_to_name, Order.ship_to_address).where(Order.id == order.id)
    ).one()  # fmt: skip
    line_rows = session.execute(
        select(OrderLine.name, OrderLine.sku, OrderLine.quantity, OrderLine.unit_price)
        .where(OrderLine.order_id == order.id)
        .order_by(OrderLine.id)
    ).all()
    from_rows = Renderer(session).render(
        "order_confirmation", shop_row, cust_row, order=order_cols, lines=line_rows
    )
    from_orm = Renderer(session).render("order_confirmation", shop, customer, order=order_row)
    assert from_rows == from_orm
    assert from_rows.device == "mobile"
    assert session.get(Template, from_rows.template_id).device == "mobile"
    assert "--\n山田園 携帯" in from_rows.body_text
    assert "<b>花子</b> 様" in from_rows.body_text  # text bodies are not escaped
    assert (
        "湯呑み（CUP-010）" in from_rows.body_text
        and "2,750円 × 3 ＝ 8,250円" in from_rows.body_text
    )
    assert from_rows.subject == "【お茶の山田園】ご注文ありがとうございます（受注番号：TEA-1）"


def _mail_for(session: Session, shop, customer, order, status: str = "unsent") -> Mail:
    rendered = Renderer(session).render("order_confirmation", shop, customer, order=order)
    mail = Mail(
        shop_id=shop.id, kind="order_confirmation", source_key=f"order:{order.id}",
        status=status, customer_id=customer.id, order_id=order.id,
        template_id=rendered.template_id, device=rendered.device, to_address=customer.email,
        from_address=shop.from_address, subject=rendered.subject,
        body_text=rendered.body_text, body_html=rendered.body_html,
    )  # fmt: skip
    session.add(mail)
    session.flush()
    return mail


def test_rerender_after_override_and_after_reset(session: Session) -> None:
    install_default_templates(session)
    shop = make_shop(session)
    customer = make_customer(session, shop)
    order = make_order(session, customer, T0)
    mail = _mail_for(session, shop, customer, order)
    default_id = mail.template_id
    override = save_template(
        session, shop.id, "order_confirmation", "pc", 1, "", "新件名 [ORDER_NO]", "[SIGN]", None
    )
    rerender_mail(session, mail, actor="reviewer")
    assert mail.subject == f"新件名 {order.order_number}"
    assert mail.template_id == override.id and mail.rendered_at is not None
    event = session.scalars(select(MailEvent).where(MailEvent.mail_id == mail.id)).one()
    assert (event.event, event.actor) == ("rerendered", "reviewer")
    assert "subject" in event.detail

    # Reset removes the override even though a mail points at it (no FK error).
    assert reset_to_default(session, shop.id, "order_confirmation", "pc", 1, "")
    session.refresh(mail)
    assert mail.template_id is None
    rerender_mail(session, mail)
    assert mail.template_id == default_id
    assert mail.subject.startswith("【お茶の山田園】ご注文ありがとうございます")


def test_rerender_refuses_sent_mail(session: Session) -> None:
    install_default_templates(session)
    shop = make_shop(session)
    customer = make_customer(session, shop)
    mail = _mail_for(session, shop, customer, make_order(session, customer, T0), status="sent")
    before = mail.subject
    with pytest.raises(
        ValueError, match=r"mail \d+: cannot re-render a mail whose status is 'sent'"
    ):
        rerender_mail(session, mail)
    assert mail.subject == before


def test_preview_shows_empty_tags_literally(session: Session) -> None:
    shop = make_shop(session, signature_pc="", coupon_url=None)
    customer = make_customer(session, shop)
    order = make_order(session, customer, T0)
    shipment = make_shipment(session, order, T0, carrier="japanpost")
    t = save_template(
        session, shop.id, "shipping_notice", "pc", 0, "",
        "[TENPO_NAME] 発送", "[CARRIER] [TRACKING_NO]\n[SIGN]\n{{ coupon_url }}", None,
    )  # fmt: skip
    shown = preview(session, t.id, customer_id=customer.id, shipment_id=shipment.id)
    assert shown.body_text == f"日本郵便 {shipment.tracking_number}\n[SIGN]\n{{{{ coupon_url }}}}"
    sent = preview(session, t.id, customer_id=customer.id, shipment_id=shipment.id, sent=True)
    assert sent.body_text == f"日本郵便 {shipment.tracking_number}\n\n"
    # No ids: built-in sample rows fill the order/shipment fields.
    sample = preview(session, t.id)
    assert sample.body_text.startswith("ヤマト運輸 123456789012")
    with pytest.raises(LookupError, match="template_id: no template with id 999"):
        preview(session, 999)


def test_cli_templates(session: Session, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shop = make_shop(session)
    session.commit()
    assert cli_main(["templates", "install-defaults"]) == 0
    assert "created 9" in capsys.readouterr().out
    assert cli_main(["templates", "install-defaults"]) == 0
    assert "already installed" in capsys.readouterr().out

    body = tmp_path / "body.txt"
    body.write_text("[CUSTOMER_NAME] 様\n発送しました\n[CARRIER]\n", encoding="utf-8")
    args = ["templates", "set", "--shop", "tea", "--kind", "shipping_notice", "--carrier",
            "sagawa", "--subject", "[TENPO_NAME] 発送", "--text-file", str(body)]  # fmt: skip
    assert cli_main(args) == 0
    saved_id = int(capsys.readouterr().out.split()[2])
    assert cli_main(["templates", "list", "--shop", "tea"]) == 0
    listing = capsys.readouterr().out
    assert "tea" in listing and "sagawa" in listing and "default" in listing

    assert cli_main(["templates", "preview", str(saved_id)]) == 0
    shown = capsys.readouterr().out
    assert "subject: お茶の山田園 発送" in shown and "山田 花子 様" in shown
    assert "ヤマト運輸" in shown  # no shipment id given: the sample shipment
    assert cli_main(["templates", "show", "--shop", "tea", "--kind", "shipping_notice",
                     "--carrier", "sagawa"]) == 0  # fmt: skip
    assert f"id: {saved_id}" in capsys.readouterr().out

    body.write_text("a\nb\n{% if %}\n", encoding="utf-8")
    assert cli_main(args) == 2
    assert "body_text: line 3: syntax error" in capsys.readouterr().err

    reset = [
        "templates",
        "reset",
        "--shop",
        "tea",
        "--kind",
        "shipping_notice",
        "--carrier",
        "sagawa",
    ]
    assert cli_main(reset) == 0
    assert "common default applies again" in capsys.readouterr().out
    assert cli_main(reset) == 0
    assert "no override" in capsys.readouterr().out
    assert cli_main(["templates", "reset", "--shop", "nope", "--kind", "follow_up"]) == 2
    assert "shop: no shop with code or id 'nope'" in capsys.readouterr().err
    assert cli_main(["templates", "tags"]) == 0
    assert "[SIGN_M]" in capsys.readouterr().out
    session.expire_all()
    assert session.get(Template, saved_id) is None
    assert shop.id is not None


def test_preview_mail_shows_what_the_sent_mail_leaves_empty(session: Session) -> None:
    install_default_templates(session)
    shop = make_shop(session, signature_mobile="")
    customer = make_customer(session, shop, email="hanako@ezweb.ne.jp")
    mail = _mail_for(session, shop, customer, make_order(session, customer, T0))
    assert mail.device == "mobile"
    assert "[SIGN_M]" not in mail.body_text  # stored as it is sent: empty
    shown = preview_mail(session, mail)
    assert "[SIGN_M]" in shown.body_text
    assert shown.template_id == mail.template_id
    assert shown.body_text.replace("[SIGN_M]", "") == mail.body_text


def test_notice_to_the_shop_renders_without_a_customer(session: Session) -> None:
    install_default_templates(session)
    shop = make_shop(session)
    extra = {"notice_subject": "送信上限に達しました", "notice_body": "120通を保留にしました。"}
    mail = Renderer(session).render("notice", shop, None, extra=extra)
    assert mail.subject == "【Automail】送信上限に達しました"
    assert mail.body_text.startswith("お茶の山田園 ご担当者様\n\n120通を保留にしました。")
    assert mail.device == "pc"
