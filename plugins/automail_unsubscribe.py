"""Airflow plugin: the public newsletter unsubscribe link (SPEC C10).

Mounted at <base_url>/automail-public. Deliberately WITHOUT login: recipients are not
Airflow users. Its only credential is the HMAC-signed token in the link (see
automail.campaigns.unsubscribe); the app exposes nothing but the confirm page and the
opt-out, never customer data beyond the shop name.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from automail.campaigns.unsubscribe_web import create_app


class AutomailUnsubscribePlugin(AirflowPlugin):
    name = "automail_unsubscribe"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": "/automail-public", "name": "Automail unsubscribe"}
    ]
