"""Sample shop data: the demo's `automail seed-demo` and small builders for tests.

The demo's shops get their customers and orders the way a real shop does: as CSV
exports (one of them a CP932 Next Engine-style order file) loaded by the import.

Names and addresses are realistic Japanese ones; a few addresses are deliberately
broken the ways seed 000 lists (dot before @, leading dot, consecutive dots), so the
address check (B9) has something to catch.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
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
# The demo's shop with a Next Engine-style export (Shift_JIS/CP932, Japanese headers).
NEXT_ENGINE_SHOP = "kitchen"
NE_CARRIERS = {"yamato": "ヤマト運輸", "sagawa": "佐川急便", "japanpost": "日本郵便"}
CUSTOMER_HEADER = [
    "customer_id", "customer_email", "customer_name", "customer_prefecture",
    "customer_address", "signed_up_at", "marketing_opt_in",
]  # fmt: skip
ORDER_HEADER = [
    "order_number", "ordered_at", "customer_id", "customer_email", "customer_name",
    "subtotal", "shipping_fee", "tax", "total", "payment_method", "sku", "product_name",
    "quantity", "unit_price", "shipped_at", "carrier", "tracking_number",
]  # fmt: skip
NE_ORDER_HEADER = [
    "受注番号", "受注日", "購入者コード", "購入者メールアドレス", "購入者名", "商品計", "発送代",
    "税金", "総合計", "支払方法", "商品コード", "商品名", "受注数", "商品単価", "発送日",
    "発送方法", "配送伝票番号",
]  # fmt: skip
JST = ZoneInfo("Asia/Tokyo")


def _write(path: Path, header: list[str], rows: list[list], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_demo_files(
    folder: Path,
    customers_per_shop: int = 1000,
    orders_per_shop: int = 1500,
    now: datetime | None = None,
    seed: int = 42,
) -> dict[str, dict[str, Path]]:
    """The demo shops' exports as their shop systems would write them, under
    `folder/<shop>/<kind>/`: UTF-8 CSVs in Automail's own format, and for the
    Next Engine shop a CP932 order export with Japanese headers (plus its mapping.toml).
    Orders cover the past 4 months, 85% of the older ones shipped."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    files: dict[str, dict[str, Path]] = {}
    for code, _name in DEMO_SHOPS:
        customers = []
        for i in range(customers_per_shop):
            f, g = rng.randrange(len(FAMILY)), rng.randrange(len(GIVEN))
            mobile = rng.random() < 0.2
            domain = rng.choice(MOBILE_DOMAINS if mobile else PC_DOMAINS)
            email = f"{GIVEN_ROMAJI[g]}.{FAMILY_ROMAJI[f]}{i}@{domain}"
            if i % 200 == 7:
                email = BAD_ADDRESSES[(i // 200) % len(BAD_ADDRESSES)]
            signed_up = now - timedelta(minutes=rng.randrange(60, 200 * 24 * 60))
            customers.append([
                f"{code.upper()}-C{i:05d}", email, f"{FAMILY[f]} {GIVEN[g]}",
                rng.choice(PREFECTURES), f"{rng.choice(PREFECTURES)}{rng.choice(CITIES)}",
                signed_up.isoformat(), "true" if rng.random() < 0.8 else "false",
            ])  # fmt: skip
        orders = []
        times = sorted(
            now - timedelta(minutes=rng.randrange(5, 120 * 24 * 60)) for _ in range(orders_per_shop)
        )
        for j, ordered_at in enumerate(times):
            cust = rng.choice(customers)
            sku, pname, price = rng.choice(PRODUCTS)
            qty = rng.randint(1, 3)
            shipped = ordered_at + timedelta(hours=rng.randint(12, 72))
            is_shipped = shipped < now and rng.random() < 0.85
            carrier = rng.choice(CARRIERS)
            tracking = f"{rng.randrange(10**11, 10**12)}"
            orders.append((j, ordered_at, cust, sku, pname, price, qty, is_shipped and shipped,
                           carrier, tracking))  # fmt: skip
        base = folder / code
        files[code] = {"customers": base / "customers" / "demo-customers.csv"}
        _write(files[code]["customers"], CUSTOMER_HEADER, customers)
        if code == NEXT_ENGINE_SHOP:
            files[code]["orders"] = base / "orders" / "demo-orders-next-engine.csv"
            (base / "orders").mkdir(parents=True, exist_ok=True)
            (base / "orders" / "mapping.toml").write_text(
                'preset = "next_engine_orders"\n', encoding="utf-8"
            )
            _write(files[code]["orders"], NE_ORDER_HEADER, [
                [f"{code.upper()}-{j:06d}", at.astimezone(JST).strftime("%Y/%m/%d %H:%M:%S"),
                 c[0], c[1], c[2], price * qty, 550, price * qty // 10,
                 price * qty * 11 // 10 + 550, "クレジットカード", sku, pname, qty, price,
                 shipped.astimezone(JST).strftime("%Y/%m/%d %H:%M:%S") if shipped else "",
                 NE_CARRIERS[carrier] if shipped else "", tracking if shipped else ""]
                for j, at, c, sku, pname, price, qty, shipped, carrier, tracking in orders
            ], encoding="cp932")  # fmt: skip
        else:
            files[code]["orders"] = base / "orders" / "demo-orders.csv"
            _write(files[code]["orders"], ORDER_HEADER, [
                [f"{code.upper()}-{j:06d}", at.isoformat(), c[0], c[1], c[2], price * qty, 550,
                 price * qty // 10, price * qty * 11 // 10 + 550, "クレジットカード", sku, pname,
                 qty, price, shipped.isoformat() if shipped else "", carrier if shipped else "",
                 tracking if shipped else ""]
                for j, at, c, sku, pname, price, qty, shipped, carrier, tracking in orders
            ])  # fmt: skip
    return files


def seed_demo(
    session: Session,
    customers_per_shop: int = 1000,
    orders_per_shop: int = 1500,
    now: datetime | None = None,
    seed: int = 42,
    folder: Path | None = None,
) -> DemoCounts:
    """Create the demo shops, write their exports and load them through the import.

    The files land in the drop location (`folder`, default the `automail_import` DAG's
    drop root), so the demo walks the path real shop data takes; the import records
    them, and the DAG does not read them again.
    """
    from automail.imports import import_file
    from automail.imports.drop import drop_root

    if session.scalar(select(Shop.id).limit(1)) is not None:
        raise ValueError("seed-demo: the store already has shops; use a fresh store (make clean)")
    for code, name in DEMO_SHOPS:
        # Bounces come back to a per-mail signed return path (automail.bounce_links).
        make_shop(session, code, name, return_path=f"bounces@{code}.example.jp")
    session.commit()
    engine = session.get_bind()
    assert isinstance(engine, Engine)  # a session on an engine, not a pinned connection
    folder = Path(folder or drop_root(engine))
    files = write_demo_files(folder, customers_per_shop, orders_per_shop, now, seed)
    customers = orders = 0
    for code, paths in files.items():
        for kind in ("customers", "orders"):
            mapping = "next_engine_orders" if paths[kind].name.endswith("next-engine.csv") else None
            result = import_file(engine, paths[kind], kind, code, mapping)
            if result.status != "done" or result.rejected:
                raise RuntimeError(f"seed-demo: {result.summary()}")
            customers += result.inserted if kind == "customers" else 0
            orders += result.inserted if kind == "orders" else 0
    shipments = session.scalar(select(func.count()).select_from(Shipment))
    bad = session.scalar(
        select(func.count()).select_from(Customer).where(Customer.email.in_(BAD_ADDRESSES))
    )
    return DemoCounts(len(DEMO_SHOPS), customers, orders, shipments or 0, bad or 0)
