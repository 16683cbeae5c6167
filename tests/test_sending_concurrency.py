"""F3: two claim loops at once never take the same mail (threads, separate connections)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from automail.db import session_factory
from automail.models import Mail
from automail.sample_data import make_shop
from automail.sending.claim import claim_for_run

N = 600


def _loop(engine: Engine, claim_id: str, out: list[int], start: threading.Barrier) -> None:
    factory = session_factory(engine)
    start.wait()
    while True:
        with factory() as session:
            got = claim_for_run(
                session,
                claim_id,
                datetime.now(UTC),
                cap=10**6,
                lease_seconds=600,
                max_retries=4,
                limit=7,
            ).claimed
            session.commit()
        if not got:
            return
        out.extend(got)


def test_two_concurrent_claim_loops_never_share_a_mail(engine: Engine, session: Session) -> None:
    shop = make_shop(session)
    session.execute(
        insert(Mail),
        [
            {
                "shop_id": shop.id,
                "kind": "order_confirmation",
                "source_key": f"c:{i}",
                "to_address": f"u{i}@example.jp",
                "from_address": shop.from_address,
                "reply_to": shop.reply_to,
                "subject": "s",
                "body_text": "b",
            }
            for i in range(N)
        ],
    )
    session.commit()
    results: dict[str, list[int]] = {"a": [], "b": []}
    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=_loop, args=(engine, k, v, start)) for k, v in results.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    a, b = set(results["a"]), set(results["b"])
    assert len(a) == len(results["a"]) and len(b) == len(results["b"])
    assert a.isdisjoint(b)
    assert len(a | b) == N
    assert a and b  # both loops really competed
    session.commit()
    claimed_by = dict(session.execute(select(Mail.id, Mail.claimed_by)).all())
    assert all(claimed_by[i] == "a" for i in a) and all(claimed_by[i] == "b" for i in b)
