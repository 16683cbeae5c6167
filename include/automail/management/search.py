"""Search over the mail store (B2): the screen's filters, parsed from text with
field-named errors, turned into one SQL query for the page, the count, the ids
("select all matching") and the CSV export.

The work of a page is bounded over millions of mails: rows come newest first from the
`(status, created_at, id)` / `(created_at, id)` indexes with LIMIT. The count is exact:
up to COUNT_CAP matches it falls out of the page query, beyond that one count(*) that
PostgreSQL answers from those indexes (index-only). One exception, on request only:
a body search on PostgreSQL with more than COUNT_CAP matches tests the body of every
match to count them (a phrase in a third of 1M mails: ~0.4-0.8 s), so `search(...,
exact=False)` - the screen's default for body searches - shows "1,000+" and counts
exactly when asked (bench/search.py measures every count shape). A body search on PostgreSQL reads mails
already indexed through the partial trigram indexes and the few not yet indexed
(automail.search_index) through the partial pending index; SQLite scans with
lower() LIKE. `%` and `_` typed by the user are literal on both stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, and_, func, literal, literal_column, not_, or_, select
from sqlalchemy.orm import Session, aliased

from automail.models import Customer, Mail, Order, Shop
from automail.states import KIND_LABELS, MAIL_KINDS, MAIL_STATUSES, UNSENT

ALL = "all"
SORTS = ("created_desc", "created_asc")
MAX_PER_PAGE = 500
DEFAULT_PER_PAGE = 50
LIKE_ESCAPE = "\\"
# Up to this many matches the page query counts them too (one pass, PostgreSQL); more
# matches take a separate count(*) and the page comes from the ordered-candidates plan.
COUNT_CAP = 1_000
# Bounds that keep every value representable in both stores (OFFSET is a bigint; a day
# ± the zone offset must stay a datetime): outside them the field is refused by name.
MAX_PAGE = 1_000_000
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(9998, 12, 31)


class FilterError(ValueError):
    """Bad search input; `errors` names each field and the value that was refused."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class MailFilter:
    """The screen's search conditions. Dates are calendar days in `tz` (the shop's zone)."""

    status: str = UNSENT  # seed 000: the screen opens on 未配信
    kind: str | None = None
    to: str | None = None  # case-insensitive partial match
    sent_from: date | None = None  # inclusive
    sent_to: date | None = None  # inclusive (the whole day)
    body: str | None = None  # partial match on text or HTML body; % and _ are literal
    shop: str | None = None  # shop code
    sort: str = "created_desc"
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    tz: str = "Asia/Tokyo"

    def as_params(self) -> dict[str, str]:
        """Query-string form (round-trips through `parse_filter`); empty fields left out."""
        out: dict[str, str] = {}
        for key, value in asdict(self).items():
            if value is None or key == "tz":
                continue
            out[key] = value.isoformat() if isinstance(value, date) else str(value)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-safe form for audit records (StaffAction.detail)."""
        params = self.as_params()
        params.pop("page", None)
        params.pop("per_page", None)
        params.pop("sort", None)
        return params


def _text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def parse_filter(params: Mapping[str, Any], tz: str = "Asia/Tokyo") -> MailFilter:
    """Build a MailFilter from form/query/CLI text; every bad field is reported at once."""
    errors: list[str] = []
    status = _text(params, "status") or UNSENT
    if status != ALL and status not in MAIL_STATUSES:
        errors.append(f"status: {status!r} is not one of {ALL}, {', '.join(MAIL_STATUSES)}")
    kind = _text(params, "kind")
    if kind in (None, ALL):
        kind = None
    elif kind not in MAIL_KINDS:
        errors.append(f"kind: {kind!r} is not one of {', '.join(MAIL_KINDS)}")
    days: dict[str, date | None] = {}
    for key in ("sent_from", "sent_to"):
        raw = _text(params, key)
        days[key] = None
        if raw is not None:
            try:
                days[key] = date.fromisoformat(raw)
            except ValueError:
                errors.append(f"{key}: {raw[:40]!r} is not a date (YYYY-MM-DD)")
                continue
            if not FIRST_DAY <= days[key] <= LAST_DAY:  # type: ignore[operator]
                errors.append(f"{key}: '{raw}' is outside {FIRST_DAY} … {LAST_DAY}")
                days[key] = None
    if days["sent_from"] and days["sent_to"] and days["sent_from"] > days["sent_to"]:
        errors.append(f"sent_to: '{days['sent_to']}' is before sent_from '{days['sent_from']}'")
    sort = _text(params, "sort") or "created_desc"
    if sort not in SORTS:
        errors.append(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
    page = _positive_int(params, "page", 1, errors)
    if page > MAX_PAGE:
        errors.append(f"page: '{page}' is more than {MAX_PAGE}")
    per_page = _positive_int(params, "per_page", DEFAULT_PER_PAGE, errors)
    if per_page > MAX_PER_PAGE:
        errors.append(f"per_page: '{per_page}' is more than {MAX_PER_PAGE}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(f"tz: {tz!r} is not a time zone")
    for key in ("to", "body", "shop"):
        raw = _text(params, key)
        if raw is not None and ("\x00" in raw or len(raw) > 1000):
            errors.append(f"{key}: {raw[:40]!r} is not searchable text (NUL or over 1000 chars)")
    if errors:
        raise FilterError(errors)
    return MailFilter(
        status=status,
        kind=kind,
        to=_text(params, "to"),
        sent_from=days["sent_from"],
        sent_to=days["sent_to"],
        body=_text(params, "body"),
        shop=_text(params, "shop"),
        sort=sort,
        page=page,
        per_page=per_page,
        tz=tz,
    )


def _positive_int(params: Mapping[str, Any], key: str, default: int, errors: list[str]) -> int:
    raw = _text(params, key)
    if raw is None:
        return default
    try:
        if not raw.isascii() or len(raw) > 30:  # full-width digits, 10**4300-digit input
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        errors.append(f"{key}: {raw[:40]!r} is not a whole number")
        return default
    if value < 1:
        errors.append(f"{key}: '{value}' must be 1 or more")
        return default
    return value


def like_pattern(text: str) -> str:
    """`%text%` with the user's own %, _ and the escape character taken literally."""
    escaped = (text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")).replace(
        "_", LIKE_ESCAPE + "_"
    )
    return f"%{escaped}%"


def day_start(day: date, tz: str) -> datetime:
    """Midnight of `day` in zone `tz`, as an aware datetime (compared against UTC columns)."""
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(tz))


def where_clauses(session: Session, f: MailFilter) -> list[Any]:
    plain, body = _split_clauses(session, f)
    return plain + ([body] if body is not None else [])


def _split_clauses(session: Session, f: MailFilter) -> tuple[list[Any], Any | None]:
    """(conditions btree indexes can serve, the body condition or None)."""
    clauses: list[Any] = []
    if f.status != ALL:
        clauses.append(Mail.status == f.status)
    if f.kind:
        clauses.append(Mail.kind == f.kind)
    if f.to:
        clauses.append(Mail.to_address.ilike(like_pattern(f.to), escape=LIKE_ESCAPE))
    if f.sent_from:
        clauses.append(Mail.sent_at >= day_start(f.sent_from, f.tz))
    if f.sent_to:
        clauses.append(Mail.sent_at < day_start(f.sent_to + timedelta(days=1), f.tz))
    if f.shop:
        shop_id = session.scalar(select(Shop.id).where(Shop.code == f.shop))
        if shop_id is None:
            raise FilterError([f"shop: {f.shop!r} is not a shop code"])
        clauses.append(Mail.shop_id == shop_id)
    return clauses, body_clause(session, f.body) if f.body else None


def body_clause(session: Session, body: str, mail: Any = Mail) -> Any:
    """Partial match on the text or HTML body, % and _ literal, any case.

    PostgreSQL: the ILIKE twice, once under `search_indexed` (implies the partial
    trigram GIN indexes' predicate, so the planner can use them) and once under
    `NOT search_indexed` (the partial pending index): a BitmapOr of small scans instead
    of a scan of every body. The pending arm matches coalesce(body, '') - the same
    result for a non-empty pattern - because the planner would otherwise factor the
    identical ILIKEs out of the OR (`(a AND x) OR (NOT a AND x)` → `x`) and lose both
    indexes. SQLite: ILIKE renders as lower() LIKE lower() ESCAPE.
    """
    pattern = like_pattern(body)
    match = or_(
        mail.body_text.ilike(pattern, escape=LIKE_ESCAPE),
        mail.body_html.ilike(pattern, escape=LIKE_ESCAPE),
    )
    if session.get_bind().dialect.name != "postgresql":
        return match
    pending_match = or_(
        func.coalesce(mail.body_text, "").ilike(pattern, escape=LIKE_ESCAPE),
        func.coalesce(mail.body_html, "").ilike(pattern, escape=LIKE_ESCAPE),
    )
    return or_(and_(mail.search_indexed, match), and_(not_(mail.search_indexed), pending_match))


def base_query(session: Session, f: MailFilter) -> Select[Any]:
    return select(Mail).where(*where_clauses(session, f))


@dataclass(frozen=True)
class ResultRow:
    id: int
    created_at: datetime
    shop: str
    kind: str
    kind_label: str
    to_address: str
    status: str
    sent_at: datetime | None
    subject: str
    customer_name: str | None = None
    order_number: str | None = None  # the shop's number (RICE-001325), not our order id


@dataclass(frozen=True)
class SearchResult:
    filter: MailFilter
    total: int  # exact unless `capped`
    rows: list[ResultRow]
    capped: bool = False  # a body search not counted exactly: more than `total` match

    @property
    def total_label(self) -> str:
        """What the screen and CLI print: "1,234" (or "1,000+" when capped)."""
        return f"{self.total:,}+" if self.capped else f"{self.total:,}"

    @property
    def pages(self) -> int:
        """Pages of the matches (at least 1)."""
        return max(1, -(-self.total // self.filter.per_page))

    @property
    def pages_label(self) -> str:
        return f"{self.pages:,}+" if self.capped else f"{self.pages:,}"

    @property
    def has_next(self) -> bool:
        return self.filter.page < self.pages or (
            self.capped and len(self.rows) == self.filter.per_page
        )


def _ordering(f: MailFilter) -> tuple[Any, Any]:
    if f.sort == "created_asc":
        return Mail.created_at.asc(), Mail.id.asc()
    return Mail.created_at.desc(), Mail.id.desc()


def exact_count(session: Session, clauses: list[Any]) -> int:
    """count(*) of the matches: index-only on PostgreSQL for status/kind/shop/sent
    conditions ((status, created_at, id), (status, sent_at) INCLUDE (…))."""
    return session.scalar(select(func.count()).select_from(Mail).where(*clauses)) or 0


_ROW_COLUMNS = (
    Mail.id,
    Mail.created_at,
    Shop.code,
    Mail.kind,
    Mail.to_address,
    Mail.status,
    Mail.sent_at,
    Mail.subject,
    Customer.name,
    Order.order_number,
)


def _result_row(r: Any) -> ResultRow:
    return ResultRow(
        id=r[0],
        created_at=r[1],
        shop=r[2],
        kind=r[3],
        kind_label=KIND_LABELS.get(r[3], r[3]),
        to_address=r[4],
        status=r[5],
        sent_at=r[6],
        subject=r[7],
        customer_name=r[8],
        order_number=r[9],
    )


def _row_query() -> Select[Any]:
    return (
        select(*_ROW_COLUMNS)  # type: ignore[return-value]  # more columns than Select types
        .join(Shop, Shop.id == Mail.shop_id)
        .outerjoin(Customer, Customer.id == Mail.customer_id)
        .outerjoin(Order, Order.id == Mail.order_id)
    )


def _rows_by_id(session: Session, ids: list[int]) -> list[ResultRow]:
    if not ids:
        return []
    found = {r[0]: _result_row(r) for r in session.execute(_row_query().where(Mail.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def _first_matches_pg(session: Session, f: MailFilter, clauses: list[Any]) -> tuple[int, list[int]]:
    """One pass over at most COUNT_CAP + 1 matches (the planner's best unordered plan:
    trigram bitmaps for a selective body), materialized once: their count and, when
    that count is exact, the page's ids sorted from them."""
    m = (
        select(Mail.id, Mail.created_at)
        .where(*clauses)
        .limit(COUNT_CAP + 1)
        .cte("m")
        .prefix_with("MATERIALIZED")
    )
    order = (
        (m.c.created_at.asc(), m.c.id.asc())
        if f.sort == "created_asc"
        else (m.c.created_at.desc(), m.c.id.desc())
    )
    n = select(func.count().label("n")).select_from(m).subquery("n")
    page = (
        select(m.c.id)
        .order_by(*order)
        .limit(f.per_page)
        .offset((f.page - 1) * f.per_page)
        .subquery("p")
        .lateral("p")
    )
    rows = session.execute(
        select(n.c.n, page.c.id).select_from(n).outerjoin(page, literal(True))
    ).all()
    return rows[0][0], [r[1] for r in rows if r[1] is not None]


def _ordered_page_pg(session: Session, f: MailFilter, plain: list[Any]) -> list[int]:
    """The page when more than COUNT_CAP mails match: take the first K candidates of the
    non-body conditions in created_at order (index-only: (status, created_at, id), or a
    sent range from (status, sent_at) INCLUDE (created_at, id), top-K heapsort) and test
    the body only on those until the page is full, instead of testing and sorting every
    match. Exact: a match outside the first K candidates ranks after all of them, so if
    the first K hold the page's matches, the page is right; else K grows, then no limit."""
    wanted = f.page * f.per_page
    k: int | None = max(500, 10 * wanted)
    # With a sent range, read the range (index-only) and top-K sort it: `+ 0 seconds`
    # keeps the planner off a created_at-order index walk, which it costs as if sent
    # ranges were spread evenly over creation time (they are not: ~580K rows skipped).
    created = (
        Mail.created_at + literal_column("interval '0 seconds'")
        if f.sent_from or f.sent_to
        else Mail.created_at
    )
    ordering = (
        (created.asc(), Mail.id.asc())
        if f.sort == "created_asc"
        else (created.desc(), Mail.id.desc())
    )
    while True:
        page = select(Mail.id, Mail.created_at).where(*plain).order_by(*ordering)
        cand = (page.limit(k) if k is not None else page).subquery("c")
        query = select(cand.c.id)
        if f.body:
            m = aliased(Mail)
            query = query.join(m, m.id == cand.c.id).where(body_clause(session, f.body, m))
        order = (
            (cand.c.created_at.asc(), cand.c.id.asc())
            if f.sort == "created_asc"
            else (cand.c.created_at.desc(), cand.c.id.desc())
        )
        query = query.order_by(*order).limit(f.per_page).offset((f.page - 1) * f.per_page)
        ids = list(session.scalars(query))
        if len(ids) == f.per_page or k is None:
            return ids
        k = k * 20 if k < 100_000 else None


def search(session: Session, f: MailFilter, *, exact: bool = True) -> SearchResult:
    """The page and the count; `exact=False` lets a big body search skip the count."""
    plain, body = _split_clauses(session, f)
    clauses = plain + ([body] if body is not None else [])
    if session.get_bind().dialect.name != "postgresql":
        query = (
            _row_query()
            .where(*clauses)
            .order_by(*_ordering(f))
            .limit(f.per_page)
            .offset((f.page - 1) * f.per_page)
        )
        rows = [_result_row(r) for r in session.execute(query)]
        return SearchResult(filter=f, total=exact_count(session, clauses), rows=rows)
    n, ids = _first_matches_pg(session, f, clauses)
    capped = False
    if n > COUNT_CAP:
        capped = body is not None and not exact
        n = COUNT_CAP if capped else exact_count(session, clauses)
        ids = _ordered_page_pg(session, f, plain)
    return SearchResult(filter=f, total=n, rows=_rows_by_id(session, ids), capped=capped)


def matching_ids(
    session: Session, f: MailFilter, statuses: tuple[str, ...] | None = None
) -> list[int]:
    """Every id the search matches, all pages ("select all matching the search")."""
    query = select(Mail.id).where(*where_clauses(session, f))
    if statuses is not None:
        query = query.where(Mail.status.in_(statuses))
    return list(session.scalars(query.order_by(Mail.id)))


def with_page(f: MailFilter, page: int) -> MailFilter:
    return replace(f, page=max(1, page))


def local_minute(value: datetime | None, tz: str) -> str:
    """Created/sent time to the minute in the shop's zone (seed 000: 分単位)."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def zone_label(tz: str, at: datetime | None = None) -> str:
    """How a time column names its zone: "JST (UTC+09:00)"."""
    moment = (at or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(tz))
    offset = moment.strftime("%z")
    return f"{moment.tzname()} (UTC{offset[:3]}:{offset[3:]})"
