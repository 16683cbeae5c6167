"""Bounce parser accuracy and throughput, one JSON line per figure.

Accuracy is the share of messages whose hard/soft/none outcome matches the expectation:
overall and per file-name group (lhost, rhost, rfc3464, rfc3834, arf) on the real
third-party corpus in ../shared/corpora/bounces (bounces.csv), per recipient on
bounces_by_recipient.csv, and on the project's own fixtures (tests/fixtures/bounces).
Throughput parses the whole corpus (or the fixtures when the corpus is absent) repeatedly.
No baseline exists for these figures yet, so baseline and ratio are null.

    .venv/bin/python bench/bounce_accuracy.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from pathlib import Path

import figures

from automail.bounces import ParsedBounce, parse_bounce
from automail.bounces.rules import match_reason

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpora" / "bounces"
FIXTURES = ROOT / "tests" / "fixtures" / "bounces"
GROUPS = ("lhost", "rhost", "rfc3464", "rfc3834", "arf")


def _emit(name: str, value: float, unit: str) -> None:
    figures.emit(name, value, unit)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def file_outcome(parsed: ParsedBounce) -> str:
    """The recipients' shared outcome, "mixed" when they differ, "none" when there are none."""
    outcomes = {r.outcome for r in parsed.recipients}
    if not outcomes:
        return "none"
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


def corpus_figures() -> None:
    total: Counter[str] = Counter()
    good: Counter[str] = Counter()
    for row in _rows(CORPUS / "bounces.csv"):
        parsed = parse_bounce((CORPUS / "eml" / row["file"]).read_bytes())
        ok = file_outcome(parsed) == row["hard_or_soft"]
        for key in ("overall", row["file"].split("-", 1)[0]):
            total[key] += 1
            good[key] += ok
    for key in ("overall", *GROUPS):
        _emit(f"bounce_accuracy_{key}", 100.0 * good[key] / total[key], "%")

    by_file: dict[str, list[dict[str, str]]] = {}
    for row in _rows(CORPUS / "bounces_by_recipient.csv"):
        by_file.setdefault(row["file"], []).append(row)
    hits = count = 0
    for name, rows in by_file.items():
        recipients = parse_bounce((CORPUS / "eml" / name).read_bytes()).recipients
        for i, row in enumerate(rows):
            count += 1
            hits += i < len(recipients) and recipients[i].outcome == row["hard_or_soft"]
    _emit("bounce_accuracy_by_recipient", 100.0 * hits / count, "%")


def fixture_figure() -> None:
    expected: dict[str, list[str]] = {}
    for row in _rows(FIXTURES / "expected.csv"):
        expected.setdefault(row["file"], []).append(row["outcome"])
    good = sum(
        [r.outcome for r in parse_bounce((FIXTURES / name).read_bytes()).recipients] == want
        for name, want in expected.items()
    )
    _emit("bounce_accuracy_fixtures", 100.0 * good / len(expected), "%")


def throughput(seconds: float) -> None:
    source = CORPUS / "eml" if CORPUS.is_dir() else FIXTURES
    messages = [p.read_bytes() for p in sorted(source.glob("*.eml"))]
    parsed = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        match_reason.cache_clear()  # each round must not profit from the previous one's cache
        for raw in messages:
            parse_bounce(raw)
        parsed += len(messages)
    _emit("bounce_parse_throughput", parsed / (time.perf_counter() - start), "messages/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of the throughput run")
    args = ap.parse_args()
    if (CORPUS / "bounces.csv").is_file():
        corpus_figures()
    else:
        print(f"corpus not found at {CORPUS}: corpus figures skipped", file=sys.stderr)
    fixture_figure()
    throughput(args.seconds)


if __name__ == "__main__":
    main()
