"""Odd inputs at the mail data screen, the CLI and the public unsubscribe page (issue
12 item 11), and CSV formula injection through every export (issue 12 item 9).

- `page`, `per_page`, `sent_from`, `sent_to` out of range or not numbers/dates (10^24,
  9999-12-31, 0001-01-01, full-width digits, 5,000-digit numbers, hypothesis text) on
  `/automail/`, `/api/mails` and `/export.csv`: 200 or 400 naming the field, never a
  500 (counter `ui_500s`, asserted 0), and a refused export leaves no temp file
  (counter `export_temp_files_left`, asserted 0).
- Mail ids beyond BIGINT on the pages and the CLI (`mails show 10^23`): 404 / a clear
  CLI error; hostile ids in action forms: a named error, never a 500.
- Non-ASCII and hostile unsubscribe tokens: 400/403/404, never a 500.
- Formula-like cells (= + - @ TAB CR, after leading whitespace, full-width ＝＋－＠) in
  the mail export and the newsletter audience CSV: every one starts with `'` in the
  file (counter `csv_formulas_unneutralised`, asserted 0); both files carry a BOM.

Knob: FAULTS_EXAMPLES_SCALE (see test_hostile_input.py).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from automail.csv_safe import FORMULA_START

from .test_hostile_input import examples

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="automail-faults-airflow-"))

ROUTES = ("/", "/api/mails", "/export.csv")
ODD = {
    "page": ["10" + "0" * 24, "-1", "0", "１２", "9" * 5000, "1e3", " 7 ", "0x10", "1_0"],
    "per_page": ["10" + "0" * 30, "501", "-5", "ab"],
    "sent_from": ["0001-01-01", "0000-00-00", "1899-12-31", "２０２６-01-01", "2026-02-30"],
    "sent_to": ["9999-12-31", "10000-01-01", "9998-12-31", "2026-13-01", "é"],
}
FORMULAS = [
    '=HYPERLINK("http://127.0.0.1/x","click")',
    "@SUM(1+1)",
    "+1+2",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
    " =1+1",
    "\n=1+1",
    "\u3000=1+1",
    "＝HYPERLINK(1)",
    "＋1",
    "－1",
    "＠SUM(1)",
    "  @cmd|'/c calc'!A0",
]
TOKENS = ["v1.2.23.é", "v1.２.23.abc", "v1.2.23.abc\u2028", "v1.99999999999999999999.1.a", "é"]


@pytest.fixture
def client(engine):  # noqa: ANN001, ANN201
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.security import get_user
    from automail_ui.web import app
    from fastapi.testclient import TestClient

    app.state.auth_manager = create_auth_manager()
    user = SimpleAuthManagerUser(username="prober", role="admin")
    app.dependency_overrides[get_user] = lambda: user
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    app.dependency_overrides.clear()


def _temp_exports() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("automail-export-*")}


def test_odd_inputs_are_400_never_500(client, session: Session, fault_totals) -> None:  # noqa: ANN001
    from management_helpers import mail, shop

    mail(session, shop(session))
    session.commit()
    before = _temp_exports()
    errors: list[str] = []
    tried = 0

    def probe(path: str, params: dict[str, str]) -> None:
        nonlocal tried
        tried += 1
        r = client.get(path, params=params)
        if r.status_code >= 500:
            errors.append(f"{path} {params!r}: {r.status_code}")
        else:
            assert r.status_code in (200, 400), (path, params, r.status_code)

    for field, values in ODD.items():
        for value in values:
            for path in ROUTES:
                probe(path, {field: value, "status": "all"})

    @examples(60)
    @given(
        field=st.sampled_from(sorted(ODD)),
        value=st.text(max_size=40) | st.integers().map(str),
        path=st.sampled_from(ROUTES),
    )
    def fuzz(field: str, value: str, path: str) -> None:
        probe(path, {field: value})

    fuzz()
    for big in ("10" + "0" * 22, str(2**63), str(2**64)):
        tried += 2
        for path in (f"/mails/{big}", f"/api/mails/{big}"):
            r = client.get(path)
            if r.status_code >= 500:
                errors.append(f"{path}: {r.status_code}")
            assert r.status_code in (404, 422), (path, r.status_code)
    from automail_ui import csrf

    for ids in (["1e99"], ["１"], [str(2**64)], ["-3"], ["0x1"]):
        tried += 1
        form = {"bulk": "delete", "confirmed": "1", "next": "/", "ids": ids}
        r = client.post(
            "/actions",
            data={**form, "csrf_token": csrf.make_token("prober")},
            follow_redirects=False,
        )
        if r.status_code >= 500:
            errors.append(f"/actions ids={ids}: {r.status_code}")
        assert r.status_code == 303 and "error=ids" in r.headers["location"], r.headers
    fault_totals.inputs += tried
    fault_totals.count("ui_500s", len(errors))
    left = _temp_exports() - before
    fault_totals.count("export_temp_files_left", len(left))
    assert errors == []
    assert left == set()


def test_cli_mails_show_beyond_bigint_is_a_clear_error(engine, capsys, fault_totals) -> None:  # noqa: ANN001
    from automail.cli import main

    for raw in ("10" + "0" * 22, str(2**63), "0", "-1"):
        fault_totals.inputs += 1
        assert main(["mails", "show", raw]) == 2
        err = capsys.readouterr().err
        assert err.startswith("automail: error: mail ") and "no such mail" in err, err
        assert "Traceback" not in err


def test_hostile_unsubscribe_tokens_are_refused_never_500(engine, fault_totals) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from automail.campaigns.unsubscribe_web import create_app
    from automail.db import session_factory

    client = TestClient(create_app(session_factory(engine)), raise_server_exceptions=False)
    errors: list[str] = []

    def probe(token: str) -> None:
        fault_totals.inputs += 2
        for r in (
            client.get("/unsubscribe", params={"t": token}),
            client.post("/unsubscribe", data={"t": token}),
        ):
            if r.status_code >= 500:
                errors.append(f"{token!r}: {r.status_code}")
            assert r.status_code in (400, 403, 404), (token, r.status_code)

    for token in TOKENS:
        probe(token)

    @examples(60)
    @given(st.text(max_size=80) | st.builds("v1.{}.{}.{}".format, st.text(), st.text(), st.text()))
    def fuzz(token: str) -> None:
        probe(token)

    fuzz()
    fault_totals.count("unsubscribe_500s", len(errors))
    assert errors == []


def _unneutralised(rows: list[list[str]]) -> list[str]:
    bad = []
    for row in rows:
        for cell in row:
            if cell and (cell[0] in FORMULA_START or cell.lstrip()[:1] in FORMULA_START):
                bad.append(cell)
    return bad


def _payloads() -> list[str]:
    return FORMULAS + [f"{p}{i}" for i, p in enumerate(FORMULAS)]


def test_formula_cells_are_neutralised_in_both_exports(
    session: Session, tmp_path: Path, fault_totals
) -> None:  # noqa: ANN001
    from datetime import UTC, datetime

    from automail.campaigns.audience import audience_csv
    from automail.management.export import export_csv
    from automail.management.search import parse_filter
    from automail.models import Customer, Mail, Shop
    from automail.sample_data import make_customer, make_shop

    shop = make_shop(session)
    payloads = _payloads()
    for i, p in enumerate(payloads):
        c = make_customer(session, shop, f"c{i}@example.jp", name=p)
        session.add(
            Mail(
                shop_id=shop.id,
                kind="manual",
                mode="manual",
                source_key=f"csv:{i}",
                status="error",
                device="pc",
                to_address=p,
                from_address="shop@example.jp",
                subject=p,
                body_text="x",
                last_error=p,
                customer_id=c.id,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                updated_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
    session.commit()

    out = tmp_path / "mails.csv"
    assert export_csv(session, parse_filter({"status": "all"}), out) == len(payloads)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel
    mail_rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    ids = session.query(Customer.id).filter(Customer.shop_id == shop.id)
    from sqlalchemy import select

    text = audience_csv(session, select(ids.subquery().c.id))
    assert text.startswith("\ufeff")
    audience_rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    bad = _unneutralised(mail_rows) + _unneutralised(audience_rows)
    cells = sum(len(r) for r in mail_rows + audience_rows)
    quoted = [c for r in mail_rows + audience_rows for c in r if c.startswith("'")]
    assert len(quoted) >= 4 * len(payloads)  # subject, to, last error, names… each written
    assert "'" + FORMULAS[0] in {c for r in mail_rows for c in r}  # the text kept, defused

    @examples(120)
    @given(st.sampled_from(sorted(FORMULA_START)), st.text(max_size=20), st.text(" \u3000\t\n"))
    def fuzz(trigger: str, rest: str, lead: str) -> None:
        from automail.csv_safe import to_text

        value = lead + trigger + rest
        fault_totals.inputs += 1
        rows = list(csv.reader(io.StringIO(to_text(["v"], [[value]], bom=False))))
        assert _unneutralised(rows) == [], value
        assert rows[1][0] == "'" + value

    fuzz()
    fault_totals.inputs += len(payloads) * 2
    fault_totals.count("csv_formulas_unneutralised", len(bad))
    assert bad == [], bad[:5]
    assert cells and session.query(Shop).count() == 1
