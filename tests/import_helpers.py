"""Builders for import tests: Next Engine-style order CSVs in a chosen encoding."""

from __future__ import annotations

import csv
import io
from pathlib import Path

NE_HEADER = [
    "店舗コード", "受注番号", "受注日", "購入者名", "購入者メールアドレス", "発送日",
    "発送方法", "配送伝票番号", "商品コード", "商品名", "受注数", "商品単価", "総合計",
]  # fmt: skip


def ne_row(number: str, ordered: str, name: str, email: str, shipped: str = "", **kw: str) -> list:
    return [
        kw.get("shop", ""), number, ordered, name, email, shipped,
        kw.get("carrier", "ヤマト運輸" if shipped else ""), kw.get("tracking", ""),
        kw.get("sku", "TEA-001"), kw.get("product", "静岡産 深蒸し煎茶 100g"),
        kw.get("qty", "2"), kw.get("price", "1080"), kw.get("total", "2710"),
    ]  # fmt: skip


def csv_text(rows: list[list], header: list[str] = NE_HEADER) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: Path, rows: list[list], encoding: str = "cp932", bom: bool = False) -> Path:
    data = csv_text(rows).encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


GOOD_ROWS = [
    ne_row("NE-1", "2026/11/20 10:15:00", "山田 花子", "hanako@example.jp"),
    ne_row("NE-2", "2026/11/20 11:00", "佐藤 翔太", "shota@example.jp", "2026/11/21",
           tracking="123456789012"),
    ne_row("NE-3", "2026/11/21", "山田 花子", "Hanako@Example.jp", total="1,234"),
]  # fmt: skip
