"""The Airflow Assets that chain import -> creation -> sending (issue 15).

`automail_import` emits ORDERS_CHANGED when an import added or changed orders or
shipments; `automail_create_transactional` runs on it or hourly, and emits
MAILS_CREATED when it created mails; `automail_send` runs on that or every 5 minutes
(while unpaused: sending still starts paused, A4).
"""

from __future__ import annotations

from airflow.sdk import Asset

ORDERS_CHANGED = Asset(name="automail_orders_changed", uri="automail://store/orders")
MAILS_CREATED = Asset(name="automail_mails_created", uri="automail://store/mails")
