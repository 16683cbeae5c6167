"""Re-rendering stored mails on demand (the RenderMailOperator's logic).

Each mail is rendered again from its current template (automail.rendering) and then
built into its MIME message, so a mail whose template or headers cannot produce a
safe message is reported with the reason before any send run picks it up.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from automail.mime import MailBuildError, build_message
from automail.models import Mail, Shop
from automail.sending.batch import SessionFactory


def rerender_mails(
    session_factory: SessionFactory, mail_ids: Sequence[int], actor: str = "system"
) -> dict:
    """Returns {"rerendered": [ids], "failed": {id: reason}}; each mail commits alone."""
    from automail.rendering import rerender_mail

    done: list[int] = []
    failed: dict[int, str] = {}
    with session_factory() as session:
        mails = session.scalars(select(Mail).where(Mail.id.in_(list(mail_ids))).order_by(Mail.id))
        found = {m.id: m for m in mails}
        for mail_id in mail_ids:
            mail = found.get(int(mail_id))
            if mail is None:
                failed[int(mail_id)] = f"mail {mail_id}: not found"
                continue
            try:
                rerender_mail(session, mail, actor=actor)
                build_message(mail, session.get(Shop, mail.shop_id))
            except (ValueError, LookupError, MailBuildError) as exc:
                session.rollback()
                failed[mail.id] = str(exc)
                continue
            session.commit()
            done.append(mail.id)
    return {"rerendered": done, "failed": {str(k): v for k, v in failed.items()}}
