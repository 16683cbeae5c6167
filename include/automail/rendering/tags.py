"""The tags a shop may put into a template (A6), and their translation to Jinja.

Shops write the tags of the seed manuals (`[TENPO_NAME]`, `[SIGN]`, `[SIGN_M]`,
`<#クーポンURL>` ...). Before Jinja sees a template, each tag becomes the Jinja field
it stands for, so both spellings render alike: `[SIGN_M]` is `{{ sign_mobile }}`.
`TAGS` is the documented table the UI and `automail templates tags` list.

Money fields are display strings (`2,926円`), dates are JST (`2026年11月22日`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Tag:
    tag: str  # what the shop writes
    field: str  # the Jinja field it stands for
    label: str  # what the tag list shows
    group: str  # shop | order | shipment | customer | newsletter | notice
    multiline: bool = False  # HTML bodies turn its line breaks into <br>


TAGS: tuple[Tag, ...] = (
    Tag("[TENPO_NAME]", "shop_name", "店舗名 (送信元メールアドレス名)", "shop"),
    Tag("[SIGN]", "sign_pc", "署名 (PC用)", "shop", multiline=True),
    Tag("[SIGN_M]", "sign_mobile", "署名 (モバイル用)", "shop", multiline=True),
    Tag("<#クーポンURL>", "coupon_url", "クーポンURL", "shop"),
    Tag("[ORDER_NO]", "order_number", "受注番号", "order"),
    Tag("[ORDER_DATE]", "ordered_at", "受注日", "order"),
    Tag("[ITEM_LIST]", "items_text", "商品一覧 (商品名・SKU・数量・単価・小計)", "order", True),
    Tag("[SUBTOTAL]", "subtotal", "商品合計", "order"),
    Tag("[SHIPPING_FEE]", "shipping_fee", "送料", "order"),
    Tag("[TAX]", "tax", "消費税", "order"),
    Tag("[TOTAL]", "total", "合計金額", "order"),
    Tag("[PAYMENT_METHOD]", "payment_method", "支払方法", "order"),
    Tag("[SHIP_NAME]", "ship_to_name", "送付先氏名", "order"),
    Tag("[SHIP_ADDRESS]", "ship_to_address", "送付先住所", "order", multiline=True),
    Tag("[CARRIER]", "carrier_name", "配送業者", "shipment"),
    Tag("[TRACKING_NO]", "tracking_number", "送り状番号 (お問い合わせ番号)", "shipment"),
    Tag("[SHIP_DATE]", "shipped_at", "出荷確定日", "shipment"),
    Tag("[CUSTOMER_NAME]", "customer_name", "購入者名", "customer"),
    Tag("[CUSTOMER_MAIL]", "customer_email", "購入者メールアドレス", "customer"),
    Tag("[CUSTOMER_PREF]", "customer_prefecture", "購入者都道府県", "customer"),
    Tag("<#配信停止URL>", "unsubscribe_url", "配信停止URL (メルマガ)", "newsletter"),
    Tag("[UNSUBSCRIBE_URL]", "unsubscribe_url", "配信停止URL (メルマガ)", "newsletter"),
)

# Every Jinja field a template may use; the ones without a shop tag are Jinja-only.
FIELDS: dict[str, str] = {
    **{t.field: t.label for t in TAGS},
    "items": "明細のリスト: {% for item in items %}{{ item.name }} {{ item.sku }} "
    "{{ item.quantity }} {{ item.unit_price }} {{ item.line_total }}{% endfor %}",
    "signature": "受信者の端末に合った署名 (PC用 / モバイル用)",
    "shop_email": "店舗の返信先メールアドレス (Reply-To)",
    "notice_subject": "店舗への通知の題名 (notice)",
    "notice_body": "店舗への通知の本文 (notice)",
}

CARRIER_NAMES: dict[str, str] = {
    "yamato": "ヤマト運輸",
    "sagawa": "佐川急便",
    "japanpost": "日本郵便",
    "seino": "西濃運輸",
    "fukutsu": "福山通運",
}

BY_TAG: dict[str, Tag] = {t.tag: t for t in TAGS}

# What looks like a shop tag: `<#...>` always; `[...]` when upper-case ASCII words joined
# by underscores, or a near miss of a known one-word tag. Plain `[SALE]` stays text.
TAG_LIKE = re.compile(r"<#[^<>\n]{1,40}>|\[[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\]")
# A `{{ ... }}` output whose expression is a plain (dotted, filtered) name: the preview
# shows exactly this text when the value is empty (A6).
SIMPLE_OUTPUT = re.compile(
    r"\{\{(-?)\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\s*\|\s*[A-Za-z_]\w*)*)\s*(-?)\}\}"
)
_PREVIEW_SCAN = re.compile(f"{SIMPLE_OUTPUT.pattern}|{TAG_LIKE.pattern}")


def is_tag_token(token: str) -> bool:
    """Whether a TAG_LIKE match is meant as a tag (else it is ordinary text like [SALE])."""
    if token in BY_TAG or token.startswith("<#") or "_" in token:
        return True
    import difflib

    return bool(difflib.get_close_matches(token, BY_TAG, n=1, cutoff=0.8))


def _field_expr(tag: Tag, html: bool) -> str:
    return f"{tag.field}|br" if html and tag.multiline else tag.field


def to_jinja(source: str, *, html: bool) -> str:
    """Shop tags -> Jinja outputs, for the mail that is sent (empty values render empty)."""

    def sub(m: re.Match[str]) -> str:
        tag = BY_TAG.get(m.group(0))
        return m.group(0) if tag is None else "{{ " + _field_expr(tag, html) + " }}"

    return TAG_LIKE.sub(sub, source)


def to_preview_jinja(source: str, *, html: bool) -> tuple[str, list[str]]:
    """Like to_jinja, but every tag and plain `{{ name }}` shows as written when empty.

    Returns the Jinja source and the literals it refers to as `_lits[i]` (kept out of the
    source so no quoting of the shop's text is needed). Line breaks are never added, so
    line numbers stay those of the shop's text.
    """
    literals: list[str] = []

    def keep(expr: str, literal: str, lstrip: str = "", rstrip: str = "") -> str:
        literals.append(literal)
        return f"{{{{{lstrip} _ph({expr}, _lits[{len(literals) - 1}]) {rstrip}}}}}"

    def sub(m: re.Match[str]) -> str:
        text = m.group(0)
        if text.startswith("{{"):
            return keep(m.group(2), text, m.group(1), m.group(3))
        tag = BY_TAG.get(text)
        return text if tag is None else keep(_field_expr(tag, html), text)

    return _PREVIEW_SCAN.sub(sub, source), literals
