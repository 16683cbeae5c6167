"""The host name Airflow records on task instances (`[core] hostname_callable`).

On real machines it is the machine's FQDN, Airflow's default. Workers started side by
side on one machine (scripts/cluster-up.sh) name themselves with AUTOMAIL_WORKER_HOSTNAME,
so the task instances still tell which worker ran them.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("AUTOMAIL_WORKER_HOSTNAME") or socket.getfqdn()
