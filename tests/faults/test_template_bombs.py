"""Template resource bombs and out-of-range settings (issue 12.5, 12.8).

Every bomb shape (string/list repetition, padding and wrapping filters, format widths,
`**`, nested and recursive loops, self-calling macros, doubling through `~`/`+`/
namespaces, replace/join amplification, huge literals, lipsum, batch/slice fills) is
tried at save time (`validate_template`, both body parts, and newsletter/step content)
and at render time (a stored template that skipped validation; a newsletter whose bomb
fires for one recipient only, past the sample render; a creation run where it fires on
one of three orders). Each must fail with an error naming the field,
within seconds and with bounded memory (tracemalloc peak). A bomb that is saved or
rendered counts in `template_bombs_accepted`, which must stay 0.

Settings fuzz: hypothesis values of every type for every setting; a value is stored
only if it is in the setting's range, otherwise refused naming the setting
(`settings_out_of_range_accepted` must stay 0).
"""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from automail import settings
from automail.campaigns.content import CompiledContent, context_for
from automail.creation import create_transactional, set_kind
from automail.models import Mail
from automail.rendering import RenderError, TemplateError, compile_template, validate_template
from automail.rendering.limits import MAX_OUTPUT_CHARS
from automail.rendering.resolve import save_template
from automail.rendering.samples import SAMPLE_CUSTOMER, SAMPLE_SHOP, sample_sources
from automail.sample_data import make_customer, make_order, make_shop

from .conftest import FaultTotals

BOMBS: dict[str, str] = {
    "string * 10**9": '{{ "a" * 10**9 }}',
    "string * 10**8": '{{ "x" * 10**8 }}',
    "int * string": "{{ 10**8 * 'ab' }}",
    "list * 10**9": "{{ [1] * 10**9 }}",
    "nested list *": "{{ [[1] * 1000] * 1000 }}",
    "tuple *": "{{ (1, 2) * 10**8 }}",
    "power tower": "{{ 10 ** (10 ** 10) }}",
    "int squaring": "{% set ns = namespace(x=3) %}{% for i in range(40) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "center filter": "{{ 'a' | center(10**9) }}",
    "indent filter": "{{ 'a' | indent(10**9) }}",
    "indent many lines": "{{ ('x\n' * 500000) | indent(100) }}",
    "indent with string": "{{ ('x\n' * 100000) | indent('y' * 1000) }}",
    "format width": "{{ '%999999999d' | format(1) }}",
    "format star": "{{ '%*d' | format(10**9, 1) }}",
    "percent operator": "{{ '%0999999999d' % 7 }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "str.format nested width": "{{ '{:>{}}'.format(1, 10**9) }}",
    "str.center": "{{ 'a'.center(10**9) }}",
    "str.ljust": "{{ 'a'.ljust(10**9) }}",
    "str.zfill": "{{ '1'.zfill(10**9) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(10**6) }}",
    "replace amplification": "{{ ('a' * 1000) | replace('a', 'b' * 1000) | replace('b', 'c' * 1000) }}",
    "replace empty": "{{ ('a' * 100000) | replace('', 'x' * 100) }}",
    "str.replace": "{{ ('a' * 100000).replace('a', 'b' * 100) }}",
    "join big separator": "{{ range(10000) | join('x' * 100000) }}",
    "str.join": "{{ ('x' * 100000).join(['a'] * 1000) }}",
    "wordwrap wrapstring": "{{ ('a ' * 500000) | wordwrap(1, wrapstring='x' * 100) }}",
    "truncate end": "{{ 'a' | truncate(1, end='x' * 10**7) }}",
    "tojson indent": "{{ ([[1]] * 1000) | tojson(indent=10**6) }}",
    "batch fill": "{{ range(10) | batch(10**9, 'x') | list }}",
    "slice count": "{{ range(10) | slice(10**9) | list }}",
    "sum of lists": "{{ ([[1] * 1000] * 1000) | sum(start=[]) }}",
    "map center": "{{ range(9999) | map('center', 999999) | list }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "big range": "{% for i in range(10**8) %}x{% endfor %}",
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "nested small ranges": "{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}",
    "triple loop": "{% for a in range(100) %}{% for b in range(100) %}{% for c in range(100) %}"
    "x{% endfor %}{% endfor %}{% endfor %}",
    "loop over a huge string": "{% for c in 'x' * 1999999 %}{% endfor %}",
    "loop literal flood": "{% for i in range(9000) %}" + "z" * 10000 + "{% endfor %}",
    "loop output flood": "{% set a = 'x' * 999999 %}{% for i in range(9999) %}{{ a }}{% endfor %}",
    "recursive loop": "{% for x in range(10) recursive %}{{ loop(range(10)) }}{% endfor %}",
    "macro fork bomb": "{% macro m(n) %}{% if n %}{{ m(n-1) }}{{ m(n-1) }}{% endif %}x{% endmacro %}"
    "{{ m(40) }}",
    "macro infinite recursion": "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "macro doubling": "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n-1) }}{% else %}{{ s|length }}"
    "{% endif %}{% endmacro %}{{ d('a', 60) }}",
    "namespace ~ doubling": "{% set ns = namespace(s='a') %}{% for i in range(60) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "namespace + doubling": "{% set ns = namespace(s=['a']) %}{% for i in range(60) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "set block flood": "{% set x %}{% for i in range(9000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}"
    "{{ x }}{{ x }}",
    "filter block flood": "{% filter upper %}{% for i in range(9000) %}{{ 'q' * 999 }}"
    "{% endfor %}{% endfilter %}",
    "call block flood": "{% macro w() %}{% for i in range(9000) %}{{ caller() }}{% endfor %}"
    "{% endmacro %}{% call w() %}{{ 'c' * 999 }}{% endcall %}",
    "huge int literal": "{{ " + "9" * 5000 + " }}",
    "huge float exponent": "{{ 10.0 ** (10**9) }}",
    "huge list from a string": "{{ ('x' * 1999999) | list | length }}",
    "dict comprehension-like": "{{ dict.fromkeys(range(9999), 'x' * 999999) }}",
    "items of a huge dict": "{% set d = dict(a='x' * 999999) %}{% for i in range(9999) %}"
    "{{ d.items() | list }}{% endfor %}",
    "slice copy in a loop": "{% set a = 'x' * 999999 %}{% for i in range(9999) %}"
    "{{ a[::-1] | length }}{% endfor %}",
    "length of huge value in a loop": "{% set a = 'x' * 999999 %}{% for i in range(9999) %}"
    "{{ a | length }}{% endfor %}",
}

# Bodies that pass the sample render and fire on one order (render-time check).
TRIGGER = "BOMB-0001"


def _triggered(bomb: str, field: str = "customer_name") -> str:
    return f'{{% if {field} == "{TRIGGER}" %}}{bomb}{{% endif %}}'


def _bounded(fn, limit_s: float = 10.0, limit_mb: int = 128) -> BaseException | None:  # noqa: ANN001
    """Run fn; return what it raised (None if it returned). Fails if it was slow or big."""
    tracemalloc.start()
    start = time.monotonic()
    raised = None
    try:
        fn()
    except Exception as exc:
        raised = exc
    finally:
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < limit_s, f"took {elapsed:.1f} s"
    assert peak < limit_mb * 2**20, f"peak {peak / 2**20:.0f} MB"
    return raised


@pytest.fixture(scope="module")
def bomb_totals(fault_totals: FaultTotals):  # noqa: ANN201
    accepted: list[str] = []
    yield accepted
    fault_totals.count("template_bombs_accepted", len(accepted))
    fault_totals.lines.append(f"template bombs: shapes={len(BOMBS)} accepted={len(accepted)}")
    assert accepted == []


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_at_save_naming_the_field(
    name: str, bomb_totals: list[str], fault_totals: FaultTotals
) -> None:
    bomb = BOMBS[name]
    for field, args in (("body_text", ("件名", bomb, None)), ("body_html", ("件名", None, bomb))):
        fault_totals.inputs += 1
        err = _bounded(lambda args=args: validate_template(*args))
        if err is None:
            bomb_totals.append(f"save {field}: {name}")
            continue
        assert isinstance(err, TemplateError), repr(err)
        assert err.field == field and str(err).startswith(field)
    for make in (
        lambda: CompiledContent("件名", bomb, "text"),
        lambda: CompiledContent("件名", bomb, "html"),
    ):
        fault_totals.inputs += 1
        err = _bounded(make)
        if err is None:
            bomb_totals.append(f"newsletter: {name}")
            continue
        assert isinstance(err, ValueError) and str(err).startswith("body: "), repr(err)


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_fires_at_render_naming_the_field_and_bounded(
    name: str, bomb_totals: list[str], fault_totals: FaultTotals
) -> None:
    """A stored template that never went through validation (stored before the limits,
    or by hand) and a newsletter whose bomb hides behind one recipient's name."""
    bomb = BOMBS[name]
    try:
        compiled = compile_template("件名", bomb, bomb)
    except ValueError:
        pytest.skip("not even compilable (a literal beyond Python's limits)")
    fault_totals.inputs += 2
    err = _bounded(lambda: compiled.render(sample_sources(), False))
    if err is None:
        bomb_totals.append(f"render: {name}")
    else:
        assert isinstance(err, RenderError) and str(err).startswith("body_text: "), repr(err)
    content = CompiledContent("件名", _triggered(bomb), "text")
    customer = SimpleNamespace(**{**vars(SAMPLE_CUSTOMER), "name": TRIGGER})
    err = _bounded(lambda: content.render(context_for(SAMPLE_SHOP, customer, "https://x/u")))
    if err is None:
        bomb_totals.append(f"newsletter render: {name}")
    else:
        assert isinstance(err, ValueError) and str(err).startswith("body: "), repr(err)


def test_creation_holds_the_bombed_mail_and_stores_nothing_big(
    session: Session, fault_totals: FaultTotals
) -> None:
    """The store-growth report: three orders, a bomb on one. That mail is held with the
    reason naming the field; the others are created normally; nothing large is stored."""
    t = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    shop = make_shop(session)
    for device in ("pc", "mobile"):
        save_template(
            session, None, "order_confirmation", device, 0, "",
            "ご注文 [ORDER_NO]", _triggered('{{ "x" * 10**8 }}', "order_number") + "[CUSTOMER_NAME] 様", None,
        )  # fmt: skip
    customer = make_customer(session, shop, email="hanako@example.jp")
    for number in ("N-1", TRIGGER, "N-3"):
        make_order(session, customer, t - timedelta(hours=1), number=number)
    set_kind(session, shop, "order_confirmation", True, now=t)
    session.commit()
    fault_totals.inputs += 3
    create_transactional(session, t, t + timedelta(hours=1), now=t)
    mails = list(session.scalars(select(Mail).order_by(Mail.id)))
    assert len(mails) == 3
    held = [m for m in mails if m.status == "held"]
    assert len(held) == 1
    reason = held[0].last_error or ""
    assert "body_text" in reason and "rendering limit" in reason, reason
    assert all(len(m.body_text or "") < MAX_OUTPUT_CHARS for m in mails)
    assert sum(len(m.body_text or "") for m in mails) < 10_000


# --- settings fuzz ---------------------------------------------------------------------

VALUES = (
    st.integers()
    | st.integers(min_value=-10, max_value=10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["Asia/Tokyo", "UTC", "Nowhere", "https://shop.example.jp", "ftp://x"])
    | st.lists(st.integers(min_value=-10, max_value=10**9), max_size=25)
    | st.booleans()
    | st.none()
)


@pytest.mark.parametrize("key", sorted(settings.SETTINGS))
def test_settings_fuzz_stores_only_in_range_values(
    session: Session, fault_totals: FaultTotals, key: str
) -> None:
    spec = settings.SETTINGS[key]
    accepted: list[object] = []

    @hsettings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(value=VALUES)
    def check(value: object) -> None:
        fault_totals.inputs += 1
        try:
            settings.put(session, key, value)
        except ValueError as exc:
            assert f"setting {key!r}" in str(exc)
            return
        stored = settings.get(session, key)
        if spec.check(stored) is not None or type(stored) is not type(spec.default):
            accepted.append(value)

    check()
    for bad in (-1, 0, 10**30, -(10**30), float("nan"), float("inf"), "", [], [-1], None):
        fault_totals.inputs += 1
        try:
            settings.put(session, key, bad)
        except ValueError as exc:
            assert f"setting {key!r}" in str(exc)
            continue
        if spec.check(settings.get(session, key)) is not None:
            accepted.append(bad)
    session.rollback()
    fault_totals.count("settings_out_of_range_accepted", len(accepted))
    assert accepted == []
