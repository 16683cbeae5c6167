"""The mail store: migrations, constraints that guard idempotency, time handling, seed data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from automail import migrate, settings
from automail.db import make_engine
from automail.models import Base, Customer, Mail, Order, Shipment, Shop, Template
from automail.sample_data import BAD_ADDRESSES, make_customer, make_shop, seed_demo


def _mail(shop: Shop, source_key: str, **kw) -> Mail:
    return Mail(
        shop_id=shop.id,
        kind=kw.pop("kind", "order_confirmation"),
        source_key=source_key,
        to_address="a@example.jp",
        from_address=shop.from_address,
        subject="s",
        **kw,
    )


def test_migrations_down_and_up_again(session: Session, store_url: str) -> None:
    """base <-> head on the real store, with data in it; the schema then matches the models."""
    shop = make_shop(session)
    session.add(_mail(shop, "order:1"))
    session.commit()
    session.close()
    migrate.downgrade(store_url, "base")
    engine = make_engine(store_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(store_url)
    assert migrate.current_revision(store_url) == migrate.head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    # No drift: alembic's autogenerate compare finds nothing to add, drop or alter
    # (indexes included, e.g. PostgreSQL's trigram GIN indexes of migration 0003).
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_object": migrate.include_object_for(conn.dialect.name),
            },
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_one_mail_per_shop_kind_source(session: Session) -> None:
    shop = make_shop(session)
    session.add(_mail(shop, "order:1"))
    session.flush()
    session.add(_mail(shop, "order:1", kind="shipping_notice"))  # other kind: fine
    session.flush()
    session.add(_mail(shop, "order:1"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_status_outside_b1_vocabulary_is_refused(session: Session) -> None:
    shop = make_shop(session)
    session.add(_mail(shop, "order:2", status="delivered"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_one_template_per_slot_including_common_default(session: Session) -> None:
    def tpl(shop_id: int | None) -> Template:
        return Template(
            shop_id=shop_id,
            kind="order_confirmation",
            device="pc",
            stage=1,
            carrier="",
            subject="x",
            body_text="y",
        )

    shop = make_shop(session)
    session.add_all([tpl(None), tpl(shop.id)])
    session.flush()
    session.add(tpl(None))  # a second common default for the same slot
    with pytest.raises(IntegrityError):
        session.flush()


def test_times_round_trip_as_aware_utc(session: Session) -> None:
    shop = make_shop(session)
    jst = timezone(timedelta(hours=9))
    signed = datetime(2026, 3, 1, 9, 30, tzinfo=jst)
    customer = make_customer(session, shop, signed_up_at=signed)
    session.commit()
    session.expire_all()
    loaded = session.get(Customer, customer.id)
    assert loaded is not None
    assert loaded.signed_up_at == signed
    assert loaded.signed_up_at.tzinfo is not None
    assert loaded.signed_up_at.utcoffset() == timedelta(0)
    # Comparisons in SQL agree with Python's on both stores.
    later = session.scalar(
        select(func.count()).where(
            Customer.signed_up_at > signed.astimezone(UTC) - timedelta(seconds=1)
        )
    )
    assert later == 1


def test_settings_defaults_and_typed_updates(session: Session) -> None:
    assert settings.get(session, "send_cap_per_run") == 30000
    assert settings.get(session, "mail_server_stopped") is False
    settings.put(session, "mail_server_stopped", True, actor="ops")
    assert settings.get(session, "mail_server_stopped") is True
    with pytest.raises(ValueError, match="send_cap_per_run.*'lots'"):
        settings.put(session, "send_cap_per_run", "lots")
    with pytest.raises(KeyError, match="no_such"):
        settings.get(session, "no_such")


def test_seed_demo_is_valid_shop_data(session: Session, tmp_path) -> None:  # noqa: ANN001
    now = datetime(2026, 11, 1, tzinfo=UTC)
    counts = seed_demo(session, 300, 400, now=now, folder=tmp_path)
    session.commit()
    assert counts.shops == 3 and counts.customers == 900 and counts.orders == 1200
    assert session.scalar(select(func.count()).select_from(Order)) == 1200
    assert session.scalar(select(func.count()).select_from(Shipment)) == counts.shipments > 0
    emails = set(session.scalars(select(Customer.email)))
    assert emails & set(BAD_ADDRESSES), "the demo must include deliberately bad addresses"
    # Shipments never precede their order, nothing is in the future.
    rows = session.execute(
        select(Order.ordered_at, Shipment.confirmed_at).join(
            Shipment, Shipment.order_id == Order.id
        )
    ).all()
    assert all(o < s <= now for o, s in rows)
    # purchase_count follows each customer's history (first order is 1).
    firsts = session.execute(
        select(Order.customer_id, func.min(Order.purchase_count)).group_by(Order.customer_id)
    ).all()
    assert {m for _, m in firsts} == {1}
    with pytest.raises(ValueError, match="already has shops"):
        seed_demo(session, now=now, folder=tmp_path)
