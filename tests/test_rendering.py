"""Rendering (A6, F4): shop tags, placeholders, formatting, escaping, sandbox, validation.

Pure rendering needs no store; the store-backed parts are in test_templates.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from jinja2.sandbox import SecurityError

from automail.rendering import (
    TAGS,
    RenderError,
    TemplateError,
    compile_template,
    validate_template,
)
from automail.rendering.context import Sources
from automail.rendering.formatting import jst_date, yen
from automail.rendering.tags import FIELDS

SHOP = SimpleNamespace(
    id=1,
    name="お茶の山田園",
    from_name="山田園 公式",
    reply_to="support@tea.example.jp",
    signature_pc="――\nお茶の山田園\nsupport@tea.example.jp",
    signature_mobile="",
    coupon_url=None,
    repeat_stage_from=2,
)
CUSTOMER = SimpleNamespace(id=1, name="山田 花子", email="hanako@example.jp", prefecture="東京都")
ORDER = SimpleNamespace(
    order_number="TEA-000123",
    ordered_at=datetime(2026, 11, 21, 15, 30, tzinfo=UTC),  # 00:30 on the 22nd in Tokyo
    purchase_count=1,
    subtotal=2160,
    shipping_fee=550,
    tax=216,
    total=2926,
    payment_method="クレジットカード",
    ship_to_name="山田 花子",
    ship_to_address="東京都中央区1-2-3",
)
LINES = [
    SimpleNamespace(name="深蒸し煎茶 100g", sku="TEA-001", quantity=2, unit_price=1080),
    SimpleNamespace(name="有田焼 湯呑み", sku="CUP-010", quantity=1, unit_price=12750),
]
SHIPMENT = SimpleNamespace(
    carrier="sagawa", tracking_number="4455-6677", confirmed_at=datetime(2026, 11, 23, 2, 0)
)


def render(subject: str, text: str | None = None, html: str | None = None, *, preview=False,
           customer=CUSTOMER, shop=SHOP, extra=None, device="pc"):  # fmt: skip
    compiled = compile_template(subject, text, html, preview)
    src = Sources(shop, customer, ORDER, LINES, SHIPMENT, extra, device)
    return compiled.render(src, preview)


def test_shop_tags_and_jinja_fields_render_the_same_values() -> None:
    text = "[TENPO_NAME]|{{ shop_name }}|[ORDER_NO]|{{ order_number }}|[CUSTOMER_NAME]"
    _, body, _ = render("s", text)
    assert body == "山田園 公式|山田園 公式|TEA-000123|TEA-000123|山田 花子"


def test_tenpo_name_falls_back_to_shop_name_without_from_name() -> None:
    shop = SimpleNamespace(**{**vars(SHOP), "from_name": None})
    assert render("[TENPO_NAME]", "x", shop=shop)[0] == "お茶の山田園"


def test_yen_amounts_and_jst_dates() -> None:
    _, body, _ = render(
        "s", "[SUBTOTAL] [SHIPPING_FEE] [TAX] [TOTAL] [ORDER_DATE] [SHIP_DATE] [CARRIER]"
    )
    assert body == "2,160円 550円 216円 2,926円 2026年11月22日 2026年11月23日 佐川急便"
    assert yen(1234567) == "1,234,567円"
    assert jst_date(datetime(2026, 12, 31, 14, 59, tzinfo=UTC)) == "2026年12月31日"
    assert jst_date(datetime(2026, 12, 31, 15, 0, tzinfo=UTC)) == "2027年1月1日"


@pytest.mark.parametrize(
    ("code", "name"), [("yamato", "ヤマト運輸"), ("sagawa", "佐川急便"), ("japanpost", "日本郵便")]
)
def test_carrier_display_names(code: str, name: str) -> None:
    compiled = compile_template("s", "[CARRIER]", None)
    src = Sources(SHOP, CUSTOMER, ORDER, LINES, SimpleNamespace(carrier=code), None)
    assert compiled.render(src, False)[1] == name


def test_items_loop_and_item_list_tag() -> None:
    text = (
        "{% for item in items %}{{ item.name }}/{{ item.sku }}/{{ item.quantity }}/"
        "{{ item.unit_price }}/{{ item.line_total }}\n{% endfor %}"
    )
    _, body, _ = render("s", text)
    assert body == (
        "深蒸し煎茶 100g/TEA-001/2/1,080円/2,160円\n有田焼 湯呑み/CUP-010/1/12,750円/12,750円\n"
    )
    _, listing, _ = render("s", "[ITEM_LIST]")
    assert "深蒸し煎茶 100g (TEA-001)" in listing and "12,750円 × 1 = 12,750円" in listing


@pytest.mark.parametrize(
    ("source", "literal"),
    [
        ("[SIGN_M]", "[SIGN_M]"),
        ("<#クーポンURL>", "<#クーポンURL>"),
        ("{{ coupon_url }}", "{{ coupon_url }}"),
        ("{{coupon_url}}", "{{coupon_url}}"),
        ("{{ unsubscribe_url }}", "{{ unsubscribe_url }}"),
    ],
)
def test_empty_tag_is_literal_in_preview_and_empty_when_sent(source: str, literal: str) -> None:
    text = f"before\n{source}\nafter"
    assert render("s", text, preview=True)[1] == f"before\n{literal}\nafter"
    assert render("s", text, preview=False)[1] == "before\n\nafter"


def test_filled_tags_render_their_value_in_preview_too() -> None:
    extra = {"coupon_url": "https://tea.example.jp/c/X1"}
    assert render("s", "<#クーポンURL> [SIGN]", preview=True, extra=extra)[1] == (
        "https://tea.example.jp/c/X1 ――\nお茶の山田園\nsupport@tea.example.jp"
    )


def test_placeholder_in_html_preview_is_shown_escaped() -> None:
    _, _, html = render("s", None, "<p><#クーポンURL></p>", preview=True)
    assert html == "<p>&lt;#クーポンURL&gt;</p>"
    assert render("s", None, "<p><#クーポンURL></p>")[2] == "<p></p>"


def test_html_body_escapes_customer_data_and_text_body_does_not() -> None:
    evil = SimpleNamespace(**{**vars(CUSTOMER), "name": '<script>alert("x")</script>&'})
    subject, text, html = render(
        "[CUSTOMER_NAME] 様", "[CUSTOMER_NAME] 様", "<b>[CUSTOMER_NAME]</b> {{ customer_name }}",
        customer=evil,
    )  # fmt: skip
    assert text == '<script>alert("x")</script>& 様'
    assert subject == '<script>alert("x")</script>& 様'
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;"
    assert html == f"<b>{escaped}</b> {escaped}"
    assert "<script>" not in html


def test_html_signature_keeps_line_breaks_escaped() -> None:
    shop = SimpleNamespace(**{**vars(SHOP), "signature_pc": "<店>\n電話 03-0000"})
    assert render("s", None, "[SIGN]", shop=shop)[2] == "&lt;店&gt;<br>\n電話 03-0000"


def test_subject_cannot_carry_line_breaks_from_data() -> None:
    evil = SimpleNamespace(**{**vars(CUSTOMER), "name": "花子\r\nBcc: victim@example.jp"})
    subject, _, _ = render("[CUSTOMER_NAME] 様", "x", customer=evil)
    assert "\n" not in subject and "\r" not in subject
    assert subject == "花子 Bcc: victim@example.jp 様"


def test_signature_field_follows_device() -> None:
    shop = SimpleNamespace(**{**vars(SHOP), "signature_mobile": "--\n山田園"})
    assert render("s", "{{ signature }}", shop=shop, device="mobile")[1] == "--\n山田園"
    assert render("s", "{{ signature }}", shop=shop, device="pc")[1].startswith("――")


def test_rows_without_order_render_blank_fields() -> None:
    compiled = compile_template("[ORDER_NO]件名", "[TOTAL]|{{ tracking_number }}|[ITEM_LIST]", None)
    assert compiled.render(Sources(SHOP, CUSTOMER), False) == ("件名", "||", None)


# --- sandbox --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ items.__class__ }}",
        "{{ customer_name['__class__'] }}",
    ],
)
def test_validation_refuses_attribute_escapes(source: str) -> None:
    with pytest.raises(TemplateError, match="disallowed construct") as err:
        validate_template("s", f"line1\n{source}", None)
    assert err.value.field == "body_text" and err.value.line == 2


def test_sandbox_refuses_attribute_escape_at_render_time() -> None:
    # A template that reached the store without validation (e.g. written by SQL).
    compiled = compile_template("s", "{{ ''.__class__.__mro__ }}", None)
    with pytest.raises(RenderError) as err:
        compiled.render(Sources(SHOP, CUSTOMER), False)
    assert isinstance(err.value.__cause__, SecurityError)


def test_sandbox_refuses_mutating_data() -> None:
    with pytest.raises(TemplateError, match="cannot render") as err:
        validate_template("s", "a\n{{ items.append(1) }}", None)
    assert err.value.line == 2


# --- validation -----------------------------------------------------------------------


def test_syntax_error_names_field_and_line() -> None:
    with pytest.raises(TemplateError) as err:
        validate_template("件名", "一行目\n二行目\n{% if %}\n", None)
    assert err.value.field == "body_text" and err.value.line == 3
    assert "body_text" in str(err.value) and "line 3" in str(err.value)
    assert "syntax error" in str(err.value)


def test_syntax_error_in_html_body_and_subject() -> None:
    with pytest.raises(TemplateError, match=r"^body_html: line 2: syntax error"):
        validate_template("s", "ok", "<p>\n{% for x in %}</p>")
    with pytest.raises(TemplateError, match=r"^subject: line 1: syntax error"):
        validate_template("{{ order_number ", "ok", None)


def test_unknown_jinja_field_is_rejected_with_line() -> None:
    with pytest.raises(TemplateError) as err:
        validate_template("s", "a\n\n\n{{ custmer_name }}", None)
    assert err.value.line == 4
    assert "unknown tag {{ custmer_name }}" in str(err.value)
    assert "did you mean {{ customer_name }}" in str(err.value)


@pytest.mark.parametrize("tag", ["[ORDER_NUMBER_X]", "[SIGNN]", "<#クーポン>"])
def test_unknown_shop_tag_is_rejected(tag: str) -> None:
    with pytest.raises(TemplateError, match=r"^body_text: line 2: unknown tag") as err:
        validate_template("s", f"ok\nsee {tag}", None)
    assert tag in str(err.value)


def test_ordinary_bracket_text_is_not_a_tag() -> None:
    validate_template("[SALE] 冬のセール", "[NEW] 新商品 【限定】 [1]", None)


def test_required_parts() -> None:
    with pytest.raises(TemplateError, match="^subject: a subject is required"):
        validate_template("  ", "body", None)
    with pytest.raises(TemplateError, match="a text body or an HTML body is required"):
        validate_template("s", "", None)
    with pytest.raises(TemplateError, match="^subject: line 2: a subject is one line"):
        validate_template("line one\nline two", "body", None)
    validate_template("s", None, "<p>html only</p>")


def test_templates_cannot_load_other_templates() -> None:
    with pytest.raises(TemplateError, match="disallowed construct") as err:
        validate_template("s", 'x\n{% include "secret.txt" %}', None)
    assert err.value.line == 2


def test_type_errors_are_caught_at_save_time() -> None:
    with pytest.raises(TemplateError, match=r"^body_text: line 3: cannot render"):
        validate_template("s", "a\nb\n{{ total + 1 }}", None)


def test_every_documented_tag_is_accepted_and_maps_to_a_field() -> None:
    body = "\n".join(t.tag for t in TAGS)
    validate_template(" ".join(t.tag for t in TAGS), body, f"<p>{body}</p>")
    assert {t.field for t in TAGS} <= set(FIELDS)
    assert len({t.tag for t in TAGS}) == len(TAGS)


def test_extra_fields_may_be_allowed_by_the_caller() -> None:
    with pytest.raises(TemplateError):
        validate_template("s", "{{ campaign_code }}", None)
    validate_template("s", "{{ campaign_code }}", None, extra_fields=["campaign_code"])
    assert render("s", "{{ campaign_code }}", extra={"campaign_code": "W26"})[1] == "W26"
