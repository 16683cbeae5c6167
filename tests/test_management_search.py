"""B2 search filters on both stores: defaults, each filter, literal % and _, paging,
sorting, counts and field-named validation errors; CSV export and A9 history."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from management_helpers import mail, shop
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail.management.export import export_csv
from automail.management.history import send_history
from automail.management.search import FilterError, matching_ids, parse_filter, search
from automail.models import SendAttempt

T0 = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


def ids(session: Session, **params: str) -> list[int]:
    return [r.id for r in search(session, parse_filter(params)).rows]


@pytest.fixture
def mails(session: Session) -> dict[str, int]:
    tea, rice = shop(session, "tea"), shop(session, "rice")
    made = {
        "unsent": mail(session, tea, created_at=T0),
        "sent": mail(
            session, tea, status="sent", kind="shipping_notice", sent_at=T0, created_at=T0
        ),
        "error": mail(session, tea, status="error", to="taro@example.com", created_at=T0),
        "cancelled": mail(session, tea, status="cancelled", created_at=T0),
        "held": mail(session, rice, status="held", created_at=T0),
        "pct": mail(session, tea, body="100% 還元セール", created_at=T0),
        "under": mail(session, tea, body="code A_B only", created_at=T0),
        "plain": mail(session, tea, body="100 percent and AxB", created_at=T0),
        "html": mail(session, tea, body=None, html="<p>クーポン XYZ-77</p>", created_at=T0),
    }
    session.commit()
    return {k: v.id for k, v in made.items()}


def test_default_status_is_unsent_and_all_means_every_status(session, mails):
    default = ids(session)
    assert set(default) == {mails[k] for k in ("unsent", "pct", "under", "plain", "html")}
    assert set(ids(session, status="all")) == set(mails.values())
    for status in ("sent", "error", "cancelled", "held"):
        assert ids(session, status=status) == [mails[status]]


def test_kind_to_and_shop_filters(session, mails):
    assert ids(session, status="all", kind="shipping_notice") == [mails["sent"]]
    assert ids(session, status="all", kind="all") == ids(session, status="all")
    assert ids(session, status="all", to="TARO@example") == [mails["error"]]  # partial, any case
    assert ids(session, status="all", shop="rice") == [mails["held"]]
    with pytest.raises(FilterError, match="shop: 'nope' is not a shop code"):
        search(session, parse_filter({"shop": "nope"}))


def test_body_substring_is_partial_and_percent_underscore_are_literal(session, mails):
    assert ids(session, body="100%") == [mails["pct"]]
    assert ids(session, body="A_B") == [mails["under"]]  # not AxB
    assert ids(session, body="%") == [mails["pct"]]
    assert ids(session, body="_") == [mails["under"]]
    assert ids(session, body="還元") == [mails["pct"]]
    assert ids(session, body="xyz-77") == [mails["html"]]  # HTML body, case-insensitive
    assert ids(session, body="\\") == []


def test_sent_range_uses_local_days_and_either_bound_is_optional(session):
    tea = shop(session)
    # 2026-03-09 23:30 Tokyo = 14:30 UTC; 2026-03-10 00:30 Tokyo = 15:30 UTC on the 9th.
    late_9th = mail(session, tea, status="sent", sent_at=datetime(2026, 3, 9, 14, 30, tzinfo=UTC))
    early_10th = mail(session, tea, status="sent", sent_at=datetime(2026, 3, 9, 15, 30, tzinfo=UTC))
    never = mail(session, tea, status="sent")
    session.commit()
    assert ids(session, status="sent", sent_from="2026-03-10") == [early_10th.id]
    assert ids(session, status="sent", sent_to="2026-03-09") == [late_9th.id]
    both = ids(session, status="sent", sent_from="2026-03-09", sent_to="2026-03-10")
    assert set(both) == {late_9th.id, early_10th.id}
    assert never.id in ids(session, status="sent")


def test_bad_input_names_field_and_value(session):
    with pytest.raises(FilterError) as err:
        parse_filter(
            {"sent_from": "2026-13-01", "status": "gone", "kind": "spam", "page": "x", "sort": "up"}
        )
    text = str(err.value)
    assert "sent_from: '2026-13-01' is not a date" in text
    assert "status: 'gone' is not one of" in text
    assert "kind: 'spam' is not one of" in text
    assert "page: 'x' is not a whole number" in text
    assert "sort: 'up' is not one of" in text
    with pytest.raises(FilterError, match="sent_to: '2026-01-01' is before sent_from"):
        parse_filter({"sent_from": "2026-02-01", "sent_to": "2026-01-01"})
    with pytest.raises(FilterError, match="per_page: '501' is more than 500"):
        parse_filter({"per_page": "501"})


def test_paging_sorting_count_and_select_all(session):
    tea = shop(session)
    made = [mail(session, tea, created_at=T0 + timedelta(minutes=i)).id for i in range(7)]
    session.commit()
    first = search(session, parse_filter({"per_page": "3"}))
    assert first.total == 7 and first.pages == 3
    assert [r.id for r in first.rows] == made[::-1][:3]  # newest first by default
    last = search(session, parse_filter({"per_page": "3", "page": "3"}))
    assert [r.id for r in last.rows] == [made[0]]
    asc = search(session, parse_filter({"per_page": "3", "sort": "created_asc"}))
    assert [r.id for r in asc.rows] == made[:3]
    assert matching_ids(session, parse_filter({"per_page": "3"})) == made
    assert first.rows[0].kind_label == "Order confirmation"


def test_filter_round_trips_through_query_params():
    f = parse_filter({"status": "all", "body": "100%", "sent_from": "2026-03-01", "page": "2"})
    assert parse_filter(f.as_params()) == f
    assert f.sent_from == date(2026, 3, 1)


def test_csv_export_has_every_matching_row_and_defuses_formulas(session, tmp_path):
    tea = shop(session)
    for i in range(3):
        mail(session, tea, to=f"user{i}@example.jp", created_at=T0)
    mail(session, tea, subject='=HYPERLINK("http://x")', created_at=T0)
    mail(session, tea, status="sent", created_at=T0)
    session.commit()
    out = tmp_path / "mails.csv"
    count = export_csv(session, parse_filter({"per_page": "1"}), out)
    assert count == 4
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM for Excel
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"unsent"}
    assert rows[0]["created_at"] == "2026-03-10 12:00"  # Tokyo, to the minute
    assert any(r["subject"].startswith("'=HYPERLINK") for r in rows)
    empty = tmp_path / "none.csv"
    assert export_csv(session, parse_filter({"status": "held"}), empty) == 0
    assert empty.read_text(encoding="utf-8-sig").startswith("id,created_at,shop")


def _attempt(session, m, no, outcome, code, enhanced, message, at):
    session.add(
        SendAttempt(
            mail_id=m.id,
            attempt_no=no,
            started_at=at,
            finished_at=at,
            outcome=outcome,
            smtp_code=code,
            enhanced_code=enhanced,
            message=message,
        )
    )
    session.flush()


def test_send_history_per_shop_newest_first_with_last_result(session):
    tea, rice = shop(session, "tea"), shop(session, "rice")
    a = mail(session, tea, status="sent", sent_at=T0)
    _attempt(session, a, 1, "temp_fail", 451, "4.3.0", "try later", T0)
    _attempt(session, a, 2, "accepted", 250, "2.0.0", "queued", T0 + timedelta(minutes=1))
    b = mail(session, rice, status="error")
    _attempt(session, b, 1, "perm_fail", 550, "5.1.1", "no such user", T0 + timedelta(minutes=2))
    mail(session, tea)  # never tried: not history
    session.commit()
    rows = send_history(session)
    assert [r.mail_id for r in rows] == [b.id, a.id]
    assert (rows[1].smtp_code, rows[1].enhanced_code, rows[1].outcome) == (250, "2.0.0", "accepted")
    assert (rows[0].status, rows[0].smtp_code, rows[0].message) == ("error", 550, "no such user")
    assert [r.mail_id for r in send_history(session, shop="tea")] == [a.id]
    assert len(send_history(session, limit=1)) == 1
    with pytest.raises(LookupError, match="shop: 'zzz'"):
        send_history(session, shop="zzz")


def test_count_is_exact_past_the_page_query_cap(session, monkeypatch):
    """Issue 13 item 6: beyond COUNT_CAP the count is still exact (a separate count(*)),
    and pages continue to the last one."""
    from automail.management import search as msearch

    tea = shop(session)
    made = [mail(session, tea, created_at=T0 + timedelta(minutes=i)).id for i in range(5)]
    session.commit()
    monkeypatch.setattr(msearch, "COUNT_CAP", 3)
    first = search(session, parse_filter({"per_page": "3"}))
    assert (first.total, first.total_label) == (5, "5")
    assert first.pages == 2 and first.pages_label == "2" and first.has_next
    assert [r.id for r in first.rows] == made[::-1][:3]
    second = search(session, parse_filter({"per_page": "3", "page": "2"}))
    assert [r.id for r in second.rows] == made[::-1][3:] and not second.has_next
    monkeypatch.setattr(msearch, "COUNT_CAP", 5)
    exact = search(session, parse_filter({"per_page": "3"}))
    assert (exact.total, exact.total_label, exact.pages) == (5, "5", 2)
    assert exact.has_next and not search(session, parse_filter({"per_page": "5"})).has_next


def test_body_search_finds_mails_before_and_after_background_indexing(session):
    from automail import search_index
    from automail.models import Mail

    tea = shop(session)
    old = mail(session, tea, body="注文番号 ORD-1 100%", created_at=T0)
    new = mail(session, tea, body="注文番号 ORD-2", html="<b>ord-1 100%</b>", created_at=T0)
    mail(session, tea, body="注文番号 ORD-3 100x", created_at=T0)
    session.commit()
    assert search_index.pending_count(session) == 3
    assert search_index.index_pending(session, limit=1, batch=1) == 1  # oldest first
    session.expire_all()
    assert session.get(Mail, old.id).search_indexed and not session.get(Mail, new.id).search_indexed
    assert set(ids(session, body="ORD-1 100%")) == {old.id, new.id}  # one indexed, one pending
    report = search_index.run(session, batch=1)
    assert report.as_dict() == {"indexed": 2, "pending": 0}
    assert set(ids(session, body="ORD-1 100%")) == {old.id, new.id}
    assert ids(session, body="ord-3 100x") != [] and ids(session, body="ORD-3 100%") == []
    assert search_index.index_pending(session) == 0
    with pytest.raises(ValueError, match="batch: 0 must be 1 or more"):
        search_index.index_pending(session, batch=0)


def test_search_index_cli(session, capsys):
    from automail.cli import main

    tea = shop(session)
    for _ in range(3):
        mail(session, tea)
    session.commit()
    assert main(["search-index", "--limit", "2", "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"indexed": 2, "pending": 1}'
    assert main(["search-index"]) == 0
    assert capsys.readouterr().out.strip() == "indexed 1 mail(s); 0 still pending"
    assert main(["search-index", "--batch", "0"]) == 2
    assert "batch: 0 must be 1 or more" in capsys.readouterr().err


def test_postgres_plan_reads_trigram_and_pending_indexes_not_every_body(session):
    """The OR of `search_indexed AND …` / `NOT search_indexed AND …` lets the planner use
    the partial GIN indexes and the partial pending index (a BitmapOr), never a scan of
    every body; and the page is read newest first from (status, created_at, id)."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("trigram indexes are PostgreSQL-only")
    from sqlalchemy import text

    from automail.management.search import where_clauses
    from automail.models import Mail

    tea = shop(session)
    for i in range(30):
        mail(session, tea, body=f"ORD-{i:04d}", created_at=T0)
    session.commit()
    session.execute(text("UPDATE mails SET search_indexed = (id % 2 = 0)"))
    session.execute(text("ANALYZE mails"))
    session.execute(text("SET LOCAL enable_seqscan = off"))
    query = select(Mail.id).where(
        *where_clauses(session, parse_filter({"status": "all", "body": "ORD-0012"}))
    )
    sql = str(query.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
    plan = "\n".join(session.scalars(text(f"EXPLAIN {sql}")))
    for index in ("ix_mails_body_text_trgm", "ix_mails_body_html_trgm", "ix_mails_search_pending"):
        assert index in plan, plan
    page = search_page_plan(session)
    # Either status-led btree (on 30 rows the planner may pick the per-shop/kind one).
    assert "ix_mails_status_created" in page or "ix_mails_status_shop_kind" in page, page
    session.rollback()


def search_page_plan(session) -> str:  # noqa: ANN001
    from sqlalchemy import text

    sql = (
        "EXPLAIN SELECT id FROM mails WHERE status = 'unsent' "
        "ORDER BY created_at DESC, id DESC LIMIT 50"
    )
    return "\n".join(session.scalars(text(sql)))


def test_capped_page_finds_matches_beyond_the_first_candidates(session, monkeypatch):
    """Past the cap, PostgreSQL tests the body on the newest K candidates first; matches
    older than those must still come back (K grows), newest first."""
    from automail.management import search as msearch

    tea = shop(session)
    sent = T0 - timedelta(days=1)
    old = [
        mail(session, tea, status="sent", body="レア ORD-9", sent_at=sent, created_at=T0).id
        for _ in range(2)
    ]
    for i in range(510):
        mail(session, tea, status="sent", sent_at=sent, created_at=T0 + timedelta(seconds=i + 1))
    session.commit()
    monkeypatch.setattr(msearch, "COUNT_CAP", 1)
    params = {"status": "sent", "body": "ord-9", "sent_from": "2026-03-01", "per_page": "3"}
    result = search(session, parse_filter(params))
    assert result.total == 2 and result.total_label == "2"
    assert [r.id for r in result.rows] == old[::-1]
