"""The common default templates (shop_id NULL) every shop starts from (A5).

Japanese text mails in the usual shop style. Mobile versions differ in the signature
tag ([SIGN_M]) and keep lines short. `install_default_templates` fills only empty
slots, so running it again, or after an operator edited a default, changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from automail.rendering.resolve import get_slot, save_template
from automail.states import FOLLOW_UP, NOTICE, ORDER_CONFIRMATION, SHIPPING_NOTICE


@dataclass(frozen=True)
class DefaultTemplate:
    kind: str
    device: str
    stage: int
    carrier: str
    name: str
    subject: str
    body_text: str


_ORDER_LINES = """\
{% for item in items %}
・{{ item.name }}（{{ item.sku }}）
　{{ item.unit_price }} × {{ item.quantity }} ＝ {{ item.line_total }}
{% endfor %}"""

_ORDER_SUMMARY = f"""\
■受注番号：[ORDER_NO]
■受注日：[ORDER_DATE]
■お支払方法：[PAYMENT_METHOD]

■ご注文内容
{_ORDER_LINES}

商品合計：[SUBTOTAL]
送料：[SHIPPING_FEE]
消費税：[TAX]
合計：[TOTAL]

■お届け先
[SHIP_NAME] 様
[SHIP_ADDRESS]
"""

_COUPON = """\
{% if coupon_url %}

次回のお買い物でご利用いただけるクーポンをご用意しました。
<#クーポンURL>
{% endif %}
"""

_FIRST = f"""\
[CUSTOMER_NAME] 様

このたびは[TENPO_NAME]をご利用いただき、誠にありがとうございます。
下記の内容でご注文を承りました。

{_ORDER_SUMMARY}
商品の発送準備が整いましたら、あらためてご連絡いたします。
{_COUPON}
[SIGN]
"""

_REPEAT = f"""\
[CUSTOMER_NAME] 様

いつも[TENPO_NAME]をご利用いただき、誠にありがとうございます。
またのご注文、心よりお礼申し上げます。下記の内容でご注文を承りました。

{_ORDER_SUMMARY}
商品の発送準備が整いましたら、あらためてご連絡いたします。
{_COUPON}
[SIGN]
"""

_SHIPPING = """\
[CUSTOMER_NAME] 様

[TENPO_NAME]をご利用いただき、誠にありがとうございます。
ご注文の商品を本日発送いたしました。

■受注番号：[ORDER_NO]
■出荷日：[SHIP_DATE]
■配送業者：[CARRIER]
■お問い合わせ番号：[TRACKING_NO]

■お届け先
[SHIP_NAME] 様
[SHIP_ADDRESS]

配送状況は配送業者のホームページで、お問い合わせ番号からご確認いただけます。
（反映までお時間がかかる場合がございます）

[SIGN]
"""

_FOLLOW_UP = """\
[CUSTOMER_NAME] 様

先日は[TENPO_NAME]をご利用いただき、誠にありがとうございました。
ご注文の商品（受注番号：[ORDER_NO]）はお手元に届きましたでしょうか。

商品について気になる点がございましたら、お気軽に本メールへご返信ください。
またのご利用を心よりお待ちしております。
{% if coupon_url %}

次回のお買い物でご利用いただけるクーポンです。
<#クーポンURL>
{% endif %}

[SIGN]
"""

_NOTICE = """\
[TENPO_NAME] ご担当者様

{{ notice_body }}

――
Automail（自動送信メール）からのお知らせです。
"""


def _pair(kind: str, stage: int, name: str, subject: str, body: str) -> list[DefaultTemplate]:
    mobile = body.replace("[SIGN]", "[SIGN_M]")
    return [
        DefaultTemplate(kind, "pc", stage, "", f"{name}（PC）", subject, body),
        DefaultTemplate(kind, "mobile", stage, "", f"{name}（携帯）", subject, mobile),
    ]


DEFAULT_TEMPLATES: tuple[DefaultTemplate, ...] = (
    *_pair(
        ORDER_CONFIRMATION,
        1,
        "受注確認連絡 第1段階：初回購入用",
        "【[TENPO_NAME]】ご注文ありがとうございます（受注番号：[ORDER_NO]）",
        _FIRST,
    ),
    *_pair(
        ORDER_CONFIRMATION,
        2,
        "受注確認連絡 第2段階：リピーター用",
        "【[TENPO_NAME]】いつもご注文ありがとうございます（受注番号：[ORDER_NO]）",
        _REPEAT,
    ),
    *_pair(
        SHIPPING_NOTICE,
        0,
        "発送連絡（全配送業者共通）",
        "【[TENPO_NAME]】ご注文の商品を発送いたしました（受注番号：[ORDER_NO]）",
        _SHIPPING,
    ),
    *_pair(
        FOLLOW_UP,
        0,
        "フォロー連絡",
        "【[TENPO_NAME]】商品はお手元に届きましたでしょうか",
        _FOLLOW_UP,
    ),
    DefaultTemplate(
        NOTICE, "pc", 0, "", "店舗への通知", "【Automail】{{ notice_subject }}", _NOTICE
    ),
)


def install_default_templates(session: Session) -> int:
    """Create the common defaults whose slot is empty; returns how many were created."""
    created = 0
    for d in DEFAULT_TEMPLATES:
        if get_slot(session, None, d.kind, d.device, d.stage, d.carrier) is not None:
            continue
        save_template(
            session,
            None,
            d.kind,
            d.device,
            d.stage,
            d.carrier,
            d.subject,
            d.body_text,
            None,
            name=d.name,
        )
        created += 1
    return created
