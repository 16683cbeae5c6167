"""Notice mails to the shop itself (B7 cap reached, B8 pending/error mails).

A notice is an ordinary mail of kind `notice` (so it is logged, searchable and sent
by the same batch code) addressed to the shop's status-notification address, or the
admin address when none is set. Its source_key makes it idempotent: one cap notice
per shop per run, one pending notice per shop per day.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from automail.models import Mail, Shop
from automail.states import ERROR, HELD, NOTICE, UNSENT


def notice_address(shop: Shop) -> str:
    return (shop.status_notice_address or "").strip() or shop.admin_address


def _insert_notice(
    session: Session,
    shop: Shop,
    source_key: str,
    subject: str,
    body: str,
    now: datetime,
    run_id: str,
) -> int | None:
    """Insert one notice mail unless its key exists; returns the new mail id or None."""
    row = {
        "shop_id": shop.id,
        "kind": NOTICE,
        "source_key": source_key,
        "status": UNSENT,
        "mode": "auto",
        "to_address": notice_address(shop),
        "from_address": shop.from_address,
        "from_name": shop.from_name,
        "reply_to": shop.reply_to,
        "return_path": shop.return_path,
        "subject": subject,
        "body_text": body,
        "created_at": now,
        "updated_at": now,
        "rendered_at": now,
        "created_by": run_id,
        "attempt_count": 0,
        "device": "pc",
    }
    if session.get_bind().dialect.name == "postgresql":
        stmt: postgresql.Insert | sqlite.Insert = postgresql.insert(Mail).on_conflict_do_nothing(
            constraint="uq_mails_source"
        )
    else:
        stmt = sqlite.insert(Mail).on_conflict_do_nothing()
    return session.execute(stmt.returning(Mail.id), [row]).scalar()


def cap_notices(
    session: Session, held_by_shop: dict[int, int], cap: int, run_id: str, now: datetime
) -> list[int]:
    """One notice per shop whose mails were held by the cap in this run."""
    ids = []
    for shop_id, count in sorted(held_by_shop.items()):
        shop = session.get(Shop, shop_id)
        if shop is None:
            continue
        body = (
            f"{shop.name} ご担当者様\n\n"
            f"1回の配信上限（{cap:,}通）を超えたため、{count:,}通のメールを「保留」にしました。\n"
            "管理画面の保留メールから送信するか、`automail send release` で解除してください。\n\n"
            f"The per-run send cap ({cap:,}) was reached: {count:,} mails of this shop are "
            f"held. Send or release them from the mail management screen.\n\nrun: {run_id}\n"
        )
        new_id = _insert_notice(
            session,
            shop,
            f"cap:{run_id}",
            f"【配信上限】{count:,}通を保留しました",
            body,
            now,
            run_id,
        )
        if new_id is not None:
            ids.append(new_id)
    return ids


def pending_notices(session: Session, now: datetime, run_id: str) -> list[int]:
    """B8: for shops that asked for it, a notice when unsent/error/held mails wait.

    Counts mails not taken by this run (unclaimed): unsent ones still waiting (manual,
    deferred, not yet due), errors, and held ones. At most one notice per shop per day.
    """
    day = now.date().isoformat()
    ids = []
    for shop in session.scalars(select(Shop).where(Shop.notify_pending.is_(True))):
        counts = dict(
            session.execute(
                select(Mail.status, func.count())
                .where(
                    Mail.shop_id == shop.id,
                    Mail.kind != NOTICE,
                    Mail.status.in_((UNSENT, ERROR, HELD)),
                    Mail.claimed_by.is_(None),
                )
                .group_by(Mail.status)
            ).all()
        )
        if not counts:
            continue
        labels = {UNSENT: "未送信 unsent", ERROR: "エラー error", HELD: "保留 held"}
        lines = "\n".join(
            f"  {labels[s]}: {counts[s]:,}" for s in (UNSENT, ERROR, HELD) if counts.get(s)
        )
        body = (
            f"{shop.name} ご担当者様\n\n送信待ち・エラーのメールがあります。\n"
            f"Mails are waiting or failed:\n{lines}\n\n"
            "管理画面で内容を確認してください。Please check them in the mail management screen.\n"
        )
        new_id = _insert_notice(
            session, shop, f"pending:{day}", "【未送信・エラーメールのお知らせ】", body, now, run_id
        )
        if new_id is not None:
            ids.append(new_id)
    return ids
