"""Registers the mail data management screen with Airflow 3: a FastAPI app mounted at
/automail on the API server and a navigation entry that shows it inside the UI."""

from __future__ import annotations

import sys
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin

# Airflow loads this file by path; make the `automail_ui` package next to it importable.
_PLUGINS = str(Path(__file__).resolve().parents[1])
if _PLUGINS not in sys.path:
    sys.path.append(_PLUGINS)

from automail_ui.web import URL_PREFIX, app  # noqa: E402


class AutomailUiPlugin(AirflowPlugin):
    name = "automail_ui"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Automail mail data"}]
    external_views = [
        {
            "name": "Mail data",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "automail-mails",
            "category": "browse",
        },
        {
            "name": "Mail send history",
            "href": f"{URL_PREFIX}/history",
            "destination": "nav",
            "url_route": "automail-history",
            "category": "browse",
        },
    ]
