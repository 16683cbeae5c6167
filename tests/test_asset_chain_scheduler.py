"""The asset chain import -> creation -> send with a real scheduler, not dag.test.

bench/latency.py starts `airflow api-server`, `scheduler` and `dag-processor` on a
temporary home, unpauses the three DAGs and drops a CSV; here with 3 orders, checking
that every confirmation reaches the SMTP sink and that creation and sending ran
because of the assets (run type `asset_triggered`), not only on their clocks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_dropped_file_reaches_the_sink_through_the_assets() -> None:
    spec = importlib.util.spec_from_file_location("latency", REPO / "bench" / "latency.py")
    latency = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "bench"))
    spec.loader.exec_module(latency)
    result = latency.run_chain(3, timeout=600)
    assert len(result["latencies"]) == 3
    runs = result["runs"]
    assert "asset_triggered" in runs["automail_create_transactional"], runs
    assert "asset_triggered" in runs["automail_send"], runs
