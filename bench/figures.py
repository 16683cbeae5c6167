"""The one output format of every benchmark: a JSON line per figure.

{"name", "value", "unit", "baseline", "ratio"}; `ratio` says how many times better
than the baseline the figure is (the caller knows whether higher or lower is better).
"""

from __future__ import annotations

import json
import os
import secrets

# Every bench script imports this module. Sending and bounce ingestion sign like
# production (automail.bounce_links): a random key per run unless one is set.
os.environ.setdefault("AUTOMAIL_SECRET_KEY", secrets.token_hex(16))


def emit(
    name: str,
    value: float,
    unit: str,
    baseline: float | str | None = None,
    ratio: float | None = None,
    digits: int = 1,
) -> None:
    if isinstance(baseline, float):
        baseline = round(baseline, digits)
    line = {"name": name, "value": round(value, digits), "unit": unit, "baseline": baseline}
    line["ratio"] = None if ratio is None else round(ratio, 3)
    print(json.dumps(line, ensure_ascii=False), flush=True)


def higher_is_better(value: float, baseline: float | None) -> float | None:
    return value / baseline if baseline else None


def lower_is_better(value: float, baseline: float | None) -> float | None:
    return baseline / value if baseline and value else None
