"""Render throughput of a typical order confirmation (A5/A6 rendering path).

Builds a throwaway SQLite store with the common default templates, then renders N
order confirmations through `Renderer.render` the way the creation run does: rows
handed in (SimpleNamespace stand-ins for SQLAlchemy Rows), one or two order lines,
one customer in five on a mobile carrier address, a mix of first and repeat purchases.
Baseline: 20,000 renders/s, i.e. the 50 µs per mail that 20,000 mails/s of creation
allows in total; the rendering must stay well inside it.
Timed in process CPU time (time.process_time), so other load on the machine does not
distort the figure; the wall-clock rate is printed too.
Also prints what compiling per mail (no cache) would give, for comparison.

    .venv/bin/python bench/render.py [--mails 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import figures

BUDGET_PER_S = 20000.0


def _emit(name: str, value: float, unit: str, baseline: float | None) -> None:
    figures.emit(name, value, unit, baseline, figures.higher_is_better(value, baseline))


def _rows(n: int) -> list[tuple[SimpleNamespace, SimpleNamespace, list[SimpleNamespace]]]:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        domain = "docomo.ne.jp" if i % 5 == 0 else "example.jp"
        customer = SimpleNamespace(
            id=i, name=f"山田 太郎{i}", email=f"user{i}@{domain}", prefecture="東京都"
        )
        order = SimpleNamespace(
            id=i,
            order_number=f"B-{i:08d}",
            ordered_at=t0 + timedelta(minutes=i),
            purchase_count=1 + i % 3,
            subtotal=2160,
            shipping_fee=550,
            tax=216,
            total=2926,
            payment_method="クレジットカード",
            ship_to_name=customer.name,
            ship_to_address="東京都中央区1-2-3",
        )
        lines = [
            SimpleNamespace(name="深蒸し煎茶 100g", sku="TEA-001", quantity=2, unit_price=1080)
        ]
        if i % 2:
            lines.append(
                SimpleNamespace(name="有田焼 湯呑み", sku="CUP-010", quantity=1, unit_price=2750)
            )
        out.append((customer, order, lines))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=50000)
    args = parser.parse_args()

    from automail import migrate
    from automail.db import make_engine, session_factory
    from automail.rendering import Renderer, install_default_templates
    from automail.rendering.environment import compile_template
    from automail.rendering.render import slot_for
    from automail.sample_data import make_shop

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate.upgrade(url)
        engine = make_engine(url)
        session = session_factory(engine)()
        install_default_templates(session)
        shop = make_shop(session, "bench", "ベンチ商店")
        session.commit()
        rows = _rows(args.mails)
        renderer = Renderer(session)
        for customer, order, lines in rows[:100]:  # warm the template and compile caches
            renderer.render("order_confirmation", shop, customer, order=order, lines=lines)

        start, wall = time.process_time(), time.perf_counter()
        chars = 0
        for customer, order, lines in rows:
            mail = renderer.render("order_confirmation", shop, customer, order=order, lines=lines)
            chars += len(mail.body_text or "")
        elapsed = time.process_time() - start
        wall = time.perf_counter() - wall
        per_s = len(rows) / elapsed
        _emit("render_order_confirmation", per_s, "renders/s", BUDGET_PER_S)

        # No compile cache: what rendering would cost if each mail compiled its template.
        sample = rows[: min(len(rows), 500)]
        start = time.process_time()
        for customer, order, _lines in sample:
            device, stage, carrier = slot_for("order_confirmation", shop, customer, order)
            t = renderer.template_for(shop.id, "order_confirmation", device, stage, carrier)
            compile_template.__wrapped__(t.subject, t.body_text, t.body_html, False)
        uncached = len(sample) / (time.process_time() - start)
        _emit("compile_per_mail_uncached", uncached, "compiles/s", BUDGET_PER_S)
        session.close()
        engine.dispose()

    print(
        f"rendered {len(rows)} order confirmations in {elapsed:.2f} s CPU ({wall:.2f} s wall): "
        f"{per_s:,.0f} renders/s ({1e6 / per_s:.1f} µs each, budget 50 µs; "
        f"avg body {chars // len(rows)} chars); "
        f"compiling per mail instead would allow only {uncached:,.0f}/s"
    )


if __name__ == "__main__":
    main()
