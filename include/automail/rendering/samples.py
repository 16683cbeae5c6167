"""Sample rows for previews without real data and for the dry run of validation."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from automail.rendering.context import Sources

SAMPLE_SHOP = SimpleNamespace(
    id=0,
    name="サンプル店舗",
    from_name="サンプル店舗",
    reply_to="support@shop.example.jp",
    contact_address="support@shop.example.jp",
    signature_pc="――――――――――――\nサンプル店舗\nsupport@shop.example.jp\n――――――――――――",
    signature_mobile="--\nサンプル店舗",
    coupon_url="https://shop.example.jp/coupon/SAMPLE",
    repeat_stage_from=2,
)
SAMPLE_CUSTOMER = SimpleNamespace(
    id=0, name="山田 花子", email="hanako@example.jp", prefecture="東京都"
)
SAMPLE_ORDER = SimpleNamespace(
    id=0,
    order_number="SAMPLE-000001",
    ordered_at=datetime(2026, 11, 22, 3, 0, tzinfo=UTC),
    purchase_count=1,
    subtotal=2160,
    shipping_fee=550,
    tax=216,
    total=2926,
    payment_method="クレジットカード",
    ship_to_name="山田 花子",
    ship_to_address="東京都中央区1-2-3",
)
SAMPLE_LINES = (
    SimpleNamespace(name="静岡産 深蒸し煎茶 100g", sku="TEA-001", quantity=2, unit_price=1080),
)
SAMPLE_SHIPMENT = SimpleNamespace(
    id=0,
    carrier="yamato",
    tracking_number="123456789012",
    confirmed_at=datetime(2026, 11, 23, 1, 0, tzinfo=UTC),
)
SAMPLE_EXTRA = {
    "unsubscribe_url": "https://shop.example.jp/unsubscribe/SAMPLE",
    "notice_subject": "送信上限に達しました",
    "notice_body": "本日の送信件数が上限に達したため、残りのメールを保留にしました。",
}


def sample_sources(device: str = "pc") -> Sources:
    return Sources(
        SAMPLE_SHOP,
        SAMPLE_CUSTOMER,
        SAMPLE_ORDER,
        SAMPLE_LINES,
        SAMPLE_SHIPMENT,
        SAMPLE_EXTRA,
        device,
    )


def empty_sources(device: str = "pc") -> Sources:
    """Every field empty: a template must render (blank) even with no order or shipment."""
    return Sources(None, None, None, (), None, None, device)
