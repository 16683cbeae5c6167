"""Sample shop data: the demo's `automail seed-demo` and small builders for tests.

Names and addresses are realistic Japanese ones; a few addresses are deliberately
broken the ways seed 000 lists (dot before @, leading dot, consecutive dots), so the
address check (B9) has something to catch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from automail.models import Customer, Order, OrderLine, Shipment, Shop

FAMILY = [
    "佐藤",
    "鈴木",
    "高橋",
    "田中",
    "伊藤",
    "渡辺",
    "山本",
    "中村",
    "小林",
    "加藤",
    "吉田",
    "山田",
    "佐々木",
    "山口",
    "松本",
    "井上",
    "木村",
    "林",
    "斎藤",
    "清水",
]
FAMILY_ROMAJI = [
    "sato",
    "suzuki",
    "takahashi",
    "tanaka",
    "ito",
    "watanabe",
    "yamamoto",
    "nakamura",
    "kobayashi",
    "kato",
    "yoshida",
    "yamada",
    "sasaki",
    "yamaguchi",
    "matsumoto",
    "inoue",
    "kimura",
    "hayashi",
    "saito",
    "shimizu",
]
GIVEN = [
    "翔太",
    "陽菜",
    "大翔",
    "結衣",
    "蓮",
    "さくら",
    "湊",
    "美咲",
    "悠真",
    "葵",
    "健太",
    "愛",
    "拓海",
    "花子",
    "太郎",
]
GIVEN_ROMAJI = [
    "shota",
    "hina",
    "hiroto",
    "yui",
    "ren",
    "sakura",
    "minato",
    "misaki",
    "yuma",
    "aoi",
    "kenta",
    "ai",
    "takumi",
    "hanako",
    "taro",
]
PREFECTURES = [
    "東京都",
    "大阪府",
    "神奈川県",
    "愛知県",
    "北海道",
    "福岡県",
    "京都府",
    "兵庫県",
    "埼玉県",
    "千葉県",
    "宮城県",
    "広島県",
    "沖縄県",
]
CITIES = ["中央区1-2-3", "北区4-5-6", "青葉区7-8-9", "港区2-4-6", "西区3-3-1"]
PC_DOMAINS = ["example.jp", "example.co.jp", "example.com", "example.ne.jp"]
# Mobile carrier domains decide the device (A5); example subdomains keep mail local.
MOBILE_DOMAINS = ["docomo.ne.jp", "ezweb.ne.jp", "softbank.ne.jp", "au.com"]
BAD_ADDRESSES = [
    "sample.@example.jp",
    ".sample@example.jp",
    "sa..mple@example.jp",
    "no-at-sign.example.jp",
    "two@@example.jp",
]
PRODUCTS = [
    ("TEA-001", "静岡産 深蒸し煎茶 100g", 1080),
    ("TEA-002", "宇治抹茶 30g", 1620),
    ("CUP-010", "有田焼 湯呑み", 2750),
    ("SWT-003", "北海道 バターサンド 6個入", 1296),
    ("RIC-005", "新潟県産 コシヒカリ 5kg", 3480),
    ("SOY-002", "本醸造 醤油 1L", 648),
]
CARRIERS = ["yamato", "sagawa", "japanpost"]


@dataclass(frozen=True)
class DemoCounts:
    shops: int
    customers: int
    orders: int
    shipments: int
    bad_addresses: int


def make_shop(session: Session, code: str = "tea", name: str = "お茶の山田園", **kw) -> Shop:
    shop = Shop(
        code=code,
        name=name,
        from_address=kw.pop("from_address", f"shop@{code}.example.jp"),
        from_name=kw.pop("from_name", name),
        reply_to=kw.pop("reply_to", f"support@{code}.example.jp"),
        admin_address=kw.pop("admin_address", f"admin@{code}.example.jp"),
        signature_pc=kw.pop("signature_pc", f"――――\n{name}\nsupport@{code}.example.jp"),
        signature_mobile=kw.pop("signature_mobile", f"--\n{name}"),
        **kw,
    )
    session.add(shop)
    session.flush()
    return shop


def make_customer(session: Session, shop: Shop, email: str = "hanako@example.jp", **kw) -> Customer:
    customer = Customer(
        shop_id=shop.id,
        name=kw.pop("name", "山田 花子"),
        email=email,
        prefecture=kw.pop("prefecture", "東京都"),
        signed_up_at=kw.pop("signed_up_at", datetime.now(UTC) - timedelta(days=30)),
        **kw,
    )
    session.add(customer)
    session.flush()
    return customer


def make_order(
    session: Session,
    customer: Customer,
    ordered_at: datetime,
    number: str | None = None,
    purchase_count: int = 1,
) -> Order:
    order = Order(
        shop_id=customer.shop_id,
        customer_id=customer.id,
        order_number=number or f"ORD-{customer.id}-{int(ordered_at.timestamp())}",
        ordered_at=ordered_at,
        purchase_count=purchase_count,
        subtotal=2160,
        shipping_fee=550,
        tax=216,
        total=2926,
        payment_method="クレジットカード",
        ship_to_name=customer.name,
        ship_to_address=f"{customer.prefecture}{CITIES[0]}",
    )
    session.add(order)
    session.flush()
    session.add(
        OrderLine(
            order_id=order.id, sku="TEA-001", name=PRODUCTS[0][1], quantity=2, unit_price=1080
        )
    )
    session.flush()
    return order


def make_shipment(
    session: Session, order: Order, confirmed_at: datetime, carrier: str = "yamato"
) -> Shipment:
    shipment = Shipment(
        order_id=order.id,
        carrier=carrier,
        confirmed_at=confirmed_at,
        tracking_number=f"{order.id:012d}",
    )
    session.add(shipment)
    session.flush()
    return shipment


DEMO_SHOPS = [("tea", "お茶の山田園"), ("kitchen", "台所道具の田中商店"), ("rice", "米蔵さとう")]


def seed_demo(
    session: Session,
    customers_per_shop: int = 1000,
    orders_per_shop: int = 1500,
    now: datetime | None = None,
    seed: int = 42,
) -> DemoCounts:
    """Create demo shops, customers, orders (some shipped) over the past 4 months."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    if session.scalar(select(Shop.id).limit(1)) is not None:
        raise ValueError("seed-demo: the store already has shops; use a fresh store (make clean)")
    n_customers = n_orders = n_shipments = n_bad = 0
    for code, name in DEMO_SHOPS:
        # Bounces come back to a per-mail signed return path (automail.bounce_links).
        shop = make_shop(session, code, name, return_path=f"bounces@{code}.example.jp")
        rows = []
        for i in range(customers_per_shop):
            f, g = rng.randrange(len(FAMILY)), rng.randrange(len(GIVEN))
            mobile = rng.random() < 0.2
            domain = rng.choice(MOBILE_DOMAINS if mobile else PC_DOMAINS)
            email = f"{GIVEN_ROMAJI[g]}.{FAMILY_ROMAJI[f]}{i}@{domain}"
            if i % 200 == 7:
                email, n_bad = BAD_ADDRESSES[(i // 200) % len(BAD_ADDRESSES)], n_bad + 1
            rows.append(
                {
                    "shop_id": shop.id,
                    "name": f"{FAMILY[f]} {GIVEN[g]}",
                    "email": email,
                    "prefecture": rng.choice(PREFECTURES),
                    "address": f"{rng.choice(PREFECTURES)}{rng.choice(CITIES)}",
                    "signed_up_at": now - timedelta(minutes=rng.randrange(60, 200 * 24 * 60)),
                    "marketing_opt_in": rng.random() < 0.8,
                    "address_valid": True,
                    "address_cleaned": False,
                    "consecutive_failures": 0,
                }
            )
        session.execute(insert(Customer), rows)
        ids = list(session.scalars(select(Customer.id).where(Customer.shop_id == shop.id)))
        purchases: dict[int, int] = {}
        # Oldest first, so purchase_count (the A5 stage) follows the customer's history.
        times = sorted(
            now - timedelta(minutes=rng.randrange(5, 120 * 24 * 60)) for _ in range(orders_per_shop)
        )
        for j, ordered_at in enumerate(times):
            cid = rng.choice(ids)
            purchases[cid] = purchases.get(cid, 0) + 1
            sku, pname, price = rng.choice(PRODUCTS)
            qty = rng.randint(1, 3)
            order = Order(
                shop_id=shop.id,
                customer_id=cid,
                order_number=f"{code.upper()}-{j:06d}",
                ordered_at=ordered_at,
                purchase_count=purchases[cid],
                subtotal=price * qty,
                shipping_fee=550,
                tax=price * qty // 10,
                total=price * qty * 11 // 10 + 550,
                payment_method="クレジットカード",
            )
            session.add(order)
            session.flush()
            session.add(
                OrderLine(order_id=order.id, sku=sku, name=pname, quantity=qty, unit_price=price)
            )
            shipped = ordered_at + timedelta(hours=rng.randint(12, 72))
            if shipped < now and rng.random() < 0.85:
                session.add(
                    Shipment(
                        order_id=order.id,
                        carrier=rng.choice(CARRIERS),
                        tracking_number=f"{rng.randrange(10**11, 10**12)}",
                        confirmed_at=shipped,
                    )
                )
                n_shipments += 1
        n_customers += customers_per_shop
        n_orders += orders_per_shop
        session.flush()
    return DemoCounts(len(DEMO_SHOPS), n_customers, n_orders, n_shipments, n_bad)
