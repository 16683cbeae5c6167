"""Importing order/customer/shipment CSVs (issue 15) on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta

import pytest
from import_helpers import GOOD_ROWS, csv_text, ne_row, write_csv
from sqlalchemy import func, select

from automail.creation import create_transactional, set_kind
from automail.imports import import_file
from automail.imports.mapping import MappingError, load_mapping
from automail.models import Customer, ImportFile, ImportReject, Mail, Order, OrderLine, Shipment
from automail.rendering import install_default_templates
from automail.sample_data import make_shop

NE = "next_engine_orders"
JST = timedelta(hours=9)


def _orders(session) -> dict[str, Order]:  # noqa: ANN001
    session.commit()  # a fresh snapshot: the import wrote through its own connection
    session.expire_all()
    return {o.order_number: o for o in session.scalars(select(Order))}


def _count(session, model) -> int:  # noqa: ANN001
    return session.scalar(select(func.count()).select_from(model))


@pytest.mark.parametrize(("encoding", "bom"), [("cp932", False), ("utf-8", True), ("utf-8", False)])
def test_next_engine_orders_in_each_encoding(engine, session, tmp_path, encoding, bom):
    make_shop(session, "tea")
    session.commit()
    path = write_csv(tmp_path / "orders.csv", GOOD_ROWS, encoding, bom)
    mapping = load_mapping(NE, "orders")
    if encoding == "utf-8" and not bom:  # a shop exporting UTF-8: its mapping says so
        mapping = type(mapping)(**{**mapping.__dict__, "encoding": "utf-8"})
    result = import_file(engine, path, "orders", "tea", mapping)
    assert (result.status, result.read, result.inserted, result.rejected) == ("done", 3, 3, 0)
    orders = _orders(session)
    assert set(orders) == {"NE-1", "NE-2", "NE-3"}
    # Japan time in the file, UTC in the store; '1,234' is a number.
    assert orders["NE-1"].ordered_at == datetime(2026, 11, 20, 10, 15, tzinfo=UTC) - JST
    assert orders["NE-3"].total == 1234
    # Same customer by email, whatever its case; her orders are her 1st and 2nd.
    assert orders["NE-1"].customer_id == orders["NE-3"].customer_id
    assert (orders["NE-1"].purchase_count, orders["NE-3"].purchase_count) == (1, 2)
    hanako = session.get(Customer, orders["NE-1"].customer_id)
    assert (hanako.name, hanako.source_id) == ("山田 花子", "hanako@example.jp")
    ship = session.scalars(select(Shipment)).one()
    assert (ship.order_id, ship.carrier, ship.tracking_number) == (
        orders["NE-2"].id,
        "yamato",
        "123456789012",
    )
    line = session.scalars(select(OrderLine).where(OrderLine.order_id == orders["NE-1"].id)).one()
    assert (line.sku, line.name, line.quantity, line.unit_price) == (
        "TEA-001",
        "静岡産 深蒸し煎茶 100g",
        2,
        1080,
    )


BROKEN = [
    ne_row("B-1", "2026/11/20 09:00", "山田 花子", "hanako@example.jp"),
    ne_row("B-2", "2026/02/30 09:00", "佐藤 翔太", "shota@example.jp"),  # no such date
    ne_row("B-3", "2026/11/20 09:30", "鈴木 陽菜", ""),  # missing email
    ne_row("B-4", "2026/11/20 09:40", "高橋 大翔", "hiroto@example.jp", shop="nosuch"),
    ne_row("B-5", "2026/11/20 09:50", "田中 結衣", "yui@example.jp"),
    ne_row("B-1", "2026/11/20 10:00", "山田 花子", "hanako@example.jp"),  # duplicate id
    ne_row("B-6", "2026/11/20 10:10", "伊藤 蓮", "ren@example.jp", shop="tea"),
]


def test_broken_rows_are_kept_with_reasons_and_good_rows_imported(engine, session, tmp_path):
    make_shop(session, "tea")
    session.commit()
    path = write_csv(tmp_path / "broken.csv", BROKEN)
    result = import_file(engine, path, "orders", "tea", NE)
    assert (result.read, result.inserted, result.updated, result.unchanged, result.rejected) == (
        7,
        3,
        0,
        0,
        4,
    )
    assert set(_orders(session)) == {"B-1", "B-5", "B-6"}
    rejects = session.execute(
        select(ImportReject.line, ImportReject.column, ImportReject.value, ImportReject.reason)
        .where(ImportReject.import_file_id == result.file_id)
        .order_by(ImportReject.line)
    ).all()
    assert [(r.line, r.column, r.value) for r in rejects] == [
        (3, "受注日", "2026/02/30 09:00"),
        (4, "購入者メールアドレス", ""),
        (5, "店舗コード", "nosuch"),
        (7, "受注番号", "B-1"),
    ]
    reasons = [r.reason for r in rejects]
    assert reasons[0].startswith("not a date/time in any of the formats %Y/%m/%d %H:%M:%S")
    assert reasons[1] == "missing: customer_email is required"
    assert reasons[2] == "unknown shop (known: tea)"
    assert reasons[3] == "duplicate order_number in this file: first at line 2"
    # The same, as the CSV beside the source file (UTF-8 with BOM for spreadsheets).
    assert result.rejects_path == str(tmp_path / "broken.csv.rejects.csv")
    with open(result.rejects_path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "line", "column", "value", "reason"]
    assert [r[:4] for r in rows[1:]] == [
        ["broken.csv", str(line), column, value] for line, column, value, _ in rejects
    ]


def test_redrop_imports_nothing_and_corrected_file_updates(engine, session, tmp_path):
    install_default_templates(session)
    shop = make_shop(session, "tea")
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    set_kind(session, shop, "shipping_notice", True, now=now)
    session.commit()
    first = write_csv(tmp_path / "day1.csv", GOOD_ROWS)
    assert import_file(engine, first, "orders", "tea", NE).inserted == 3
    # The same bytes again, even under another name: nothing read, nothing written.
    again = write_csv(tmp_path / "day1-copy.csv", GOOD_ROWS)
    redrop = import_file(engine, again, "orders", "tea", NE)
    assert (redrop.status, redrop.read, redrop.inserted) == ("skipped", 0, 0)
    create_transactional(session, now - timedelta(hours=1), now, now=now)
    assert _count(session, Mail) == 1  # NE-2 was shipped

    # The corrected export: NE-1's shipment date filled in, NE-3's total fixed.
    corrected = [list(r) for r in GOOD_ROWS]
    corrected[0][5], corrected[0][7] = "2026/11/22", "999900001111"
    corrected[2][12] = "4321"
    result = import_file(
        engine, write_csv(tmp_path / "day1-fixed.csv", corrected), "orders", "tea", NE
    )
    assert (result.read, result.inserted, result.updated, result.unchanged) == (3, 0, 2, 1)
    orders = _orders(session)
    assert orders["NE-3"].total == 4321
    assert _count(session, Order) == 3 and _count(session, Customer) == 2
    # The next creation run sends the shipping notice for the shipment filled in later.
    later = now + timedelta(hours=1)
    create_transactional(session, now, later, now=later)
    keys = set(session.scalars(select(Mail.source_key).where(Mail.kind == "shipping_notice")))
    shipment_ids = {s.order_id: s.id for s in session.scalars(select(Shipment))}
    assert keys == {f"shipment:{shipment_ids[orders[n].id]}" for n in ("NE-1", "NE-2")}


def test_wrong_encoding_fails_the_file_naming_the_first_bad_line(engine, session, tmp_path):
    make_shop(session, "tea")
    session.commit()
    path = write_csv(tmp_path / "sjis.csv", GOOD_ROWS, "cp932")
    utf8 = load_mapping(NE, "orders")
    utf8 = type(utf8)(**{**utf8.__dict__, "encoding": "utf-8"})
    result = import_file(engine, path, "orders", "tea", utf8)
    assert result.status == "failed"
    # Line 1 is the header: already Japanese, so already not UTF-8.
    assert "sjis.csv: line 1: bytes" in result.error
    assert "not valid UTF-8" in result.error and "Shift_JIS (CP932)?" in result.error
    assert _count(session, Order) == 0
    # An ASCII header and one bad line further down: that line is named.
    text = csv_text(
        [["A-1", "2026-11-20T10:00:00+09:00", "x@example.jp"]] * 3,
        header=["order_number", "ordered_at", "customer_email"],
    )
    data = text.encode("ascii").replace(b"A-1", "受".encode("cp932"), 1)
    # UTF-8 for 様 then a comma: 98 2c is no CP932 character (much UTF-8 *is* valid CP932).
    (tmp_path / "mixed.csv").write_bytes(data.replace(b"A-1", "様".encode(), 1))
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        'kind = "orders"\nencoding = "cp932"\n[columns]\norder_number = "order_number"\n'
        'ordered_at = "ordered_at"\ncustomer_email = "customer_email"\n',
        encoding="utf-8",
    )
    result = import_file(engine, tmp_path / "mixed.csv", "orders", "tea", str(mapping))
    assert (
        result.status == "failed" and "mixed.csv: line 3: bytes 98 2c at column 3" in result.error
    )
    assert _count(session, Order) == 0


def test_mapping_naming_a_missing_column_fails_before_any_row(engine, session, tmp_path):
    make_shop(session, "tea")
    session.commit()
    header = [h for h in csv_text([]).splitlines()[0].split(",") if h != "購入者名"]
    rows = [[v for i, v in enumerate(r) if i != 3] for r in GOOD_ROWS]
    path = tmp_path / "no-name.csv"
    path.write_bytes(csv_text(rows, header).encode("cp932"))
    result = import_file(engine, path, "orders", "tea", NE)
    assert result.status == "failed"
    assert "'購入者名' named by mapping next_engine_orders are not in the header" in result.error
    assert _count(session, Order) == 0 and _count(session, Customer) == 0
    row = session.get(ImportFile, result.file_id)
    assert (row.status, row.error) == ("failed", result.error)


def test_a_mapping_is_checked_before_use(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "orders"\n[columns]\n"受注番号" = "order_no"\n', encoding="utf-8")
    with pytest.raises(MappingError, match="field\\(s\\) order_no unknown for orders"):
        load_mapping(str(bad), "orders")
    bad.write_text('kind = "orders"\n[columns]\n"受注番号" = "order_number"\n', encoding="utf-8")
    with pytest.raises(MappingError, match="required field\\(s\\) ordered_at, customer_email"):
        load_mapping(str(bad), "orders")


def test_duplicates_are_caught_across_chunks_and_counts_add_up(engine, session, tmp_path):
    make_shop(session, "tea")
    session.commit()
    rows = [ne_row(f"C-{i}", "2026/11/20 10:00", "客", f"c{i % 7}@example.jp") for i in range(25)]
    rows.append(ne_row("C-3", "2026/11/20 11:00", "客", "c3@example.jp"))  # chunk 3
    result = import_file(engine, write_csv(tmp_path / "c.csv", rows), "orders", "tea", NE, 10)
    assert (result.read, result.inserted, result.rejected) == (26, 25, 1)
    reason = session.scalars(select(ImportReject.reason)).one()
    assert reason == "duplicate order_number in this file: first at line 5"
    # purchase_count follows each customer's history across chunks.
    counts = sorted(o.purchase_count for o in _orders(session).values() if o.customer_id == 1)
    assert counts == list(range(1, len(counts) + 1))


def test_an_order_arriving_late_renumbers_its_customer(engine, session, tmp_path):
    make_shop(session, "tea")
    session.commit()
    later = [ne_row("L-2", "2026/11/20 10:00", "客", "late@example.jp")]
    import_file(engine, write_csv(tmp_path / "a.csv", later), "orders", "tea", NE)
    earlier = [ne_row("L-1", "2026/11/19 10:00", "客", "late@example.jp")]
    import_file(engine, write_csv(tmp_path / "b.csv", earlier), "orders", "tea", NE)
    orders = _orders(session)
    assert (orders["L-1"].purchase_count, orders["L-2"].purchase_count) == (1, 2)


def test_customers_and_shipments_files(engine, session, tmp_path):
    make_shop(session, "tea")
    session.commit()
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_id,customer_email,customer_name,signed_up_at,marketing_opt_in\n"
        "K1,k1@example.jp,山田 花子,2026-01-05T10:00:00+09:00,はい\n"
        "K2,k2@example.jp,佐藤 翔太,2026-01-06,no\n"
        "K3,k3@example.jp,鈴木,yesterday,1\n",
        encoding="utf-8",
    )
    result = import_file(engine, customers, "customers", "tea")
    assert (result.inserted, result.rejected) == (2, 1)
    session.commit()
    k1 = session.scalars(select(Customer).where(Customer.source_id == "K1")).one()
    assert k1.marketing_opt_in is True
    assert k1.signed_up_at == datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_number,ordered_at,customer_id,customer_email,total\n"
        "O1,2026-11-20T10:00:00+09:00,K1,k1@example.jp,100\n",
        encoding="utf-8",
    )
    assert import_file(engine, orders, "orders", "tea").inserted == 1
    session.commit()
    assert _count(session, Customer) == 2  # K1 found by its id, not made again
    shipments = tmp_path / "shipments.csv"
    shipments.write_text(
        "shipment_id,order_number,shipped_at,carrier,tracking_number\n"
        "S1,O1,2026-11-21T09:00:00+09:00,sagawa,555\n"
        "S2,O9,2026-11-21T09:00:00+09:00,sagawa,556\n",
        encoding="utf-8",
    )
    result = import_file(engine, shipments, "shipments", "tea")
    assert (result.inserted, result.rejected) == (1, 1)
    session.commit()  # a fresh snapshot
    reason = session.scalars(
        select(ImportReject.reason).where(ImportReject.import_file_id == result.file_id)
    ).one()
    assert reason == "no order with this number in the shop"
    ship = session.scalars(select(Shipment)).one()
    assert (ship.source_id, ship.carrier, ship.tracking_number) == ("S1", "sagawa", "555")


def test_cli_import_prints_counts_and_rejects(engine, session, tmp_path, capsys):
    from automail.cli import main

    make_shop(session, "tea")
    session.commit()
    path = write_csv(tmp_path / "broken.csv", BROKEN)
    assert main(["import", "orders", "--shop", "tea", "--mapping", NE, str(path)]) == 0
    out = capsys.readouterr().out
    assert "read 7, inserted 3, updated 0, unchanged 0, rejected 4" in out
    assert main(["import", "rejects"]) == 0
    out = capsys.readouterr().out
    assert "broken.csv" in out and "duplicate order_number in this file" in out
    assert main(["import", "orders", "--shop", "nosuch", str(path)]) == 2
    assert "no shop with code 'nosuch' (known: tea)" in capsys.readouterr().err


def test_drop_folder_scan_uses_the_shops_mapping(engine, session, tmp_path):
    from automail.imports.drop import scan_drop

    make_shop(session, "tea")
    session.commit()
    folder = tmp_path / "drop" / "tea" / "orders"
    folder.mkdir(parents=True)
    (folder / "mapping.toml").write_text('preset = "next_engine_orders"\n', encoding="utf-8")
    write_csv(folder / "export.csv", GOOD_ROWS)
    (folder / "half.csv.part").write_text("still copying", encoding="utf-8")
    late = datetime.now(UTC) + timedelta(minutes=1)
    report = scan_drop(engine, str(tmp_path / "drop"), now=late)
    assert [r.summary().split(": ", 1)[1] for r in report.results] == [
        "read 3, inserted 3, updated 0, unchanged 0, rejected 0"
    ]
    assert report.changed_orders and not report.problems
    # The next scan does not even read it again; a fresh drop is settled first.
    write_csv(folder / "export2.csv", [ne_row("NE-9", "2026/11/22", "新", "n@example.jp")])
    assert scan_drop(engine, str(tmp_path / "drop")).results == []
    again = scan_drop(engine, str(tmp_path / "drop"), now=late)
    assert [r.inserted for r in again.results] == [1]
