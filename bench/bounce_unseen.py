"""Accuracy on real bounces the parser was never tuned on: sisimai's public sample set
minus the files of ../shared/corpora/bounces.

The expected outcome of each sample is read from sisimai's own test files (t/*.t:
`'NN' => [['D.S.N.', 'code', 'reason', hardbounce], …]`), hard when `hardbounce` is 1,
none for delivered/feedback/vacation, else soft; "mixed" when a file's recipients differ.
Those labels are p5-sisimai's (HEAD), which for a few wordings disagree with the go-sisimai
labels of the shared corpus (docs/bounces.md, version drift): we keep our soft decisions.

    git clone https://github.com/sisimai/p5-sisimai /tmp/p5-sisimai   # or `fetch`
    .venv/bin/python bench/bounce_unseen.py /tmp/p5-sisimai [-v]

Prints one JSON line per figure (as bench/figures.py does); with -v, each miss.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import bounce_scoring
import figures

from automail.bounces import parse_bounce

_ENTRY = re.compile(r"'(\d+)'\s*=>\s*\[((?:\s*\[[^\]]*\],?)+)\s*\]", re.S)
_ONE = re.compile(r"\[\s*'([^']*)',\s*'([^']*)',\s*'([^']*)',\s*(\d)")
_NONE = ("delivered", "feedback", "vacation")


def labels(root: Path) -> dict[str, str]:
    """file name -> expected outcome, from sisimai's test files."""
    out: dict[str, str] = {}
    samples = root / "set-of-emails" / "maildir" / "bsd"
    for t in sorted((root / "t").glob("*.t")):
        src = t.read_text(errors="replace")
        m = re.search(r"\$enginename = '([^']+)'", src)
        if not m:
            continue
        engine = m.group(1)
        prefix = (
            "rhost-"
            if "-rhost-" in t.name
            else ""
            if engine.upper() in ("ARF", "RFC3464", "RFC3834")
            else "lhost-"
        )
        for entry in _ENTRY.finditer(src):
            name = f"{prefix}{engine.lower()}-{int(entry.group(1)):02d}.eml"
            outcomes = {
                "none" if reason in _NONE else "hard" if hard == "1" else "soft"
                for _s, _c, reason, hard in _ONE.findall(entry.group(2))
            }
            if outcomes and (samples / name).is_file():
                out[name] = outcomes.pop() if len(outcomes) == 1 else "mixed"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sisimai", type=Path, help="a checkout of github.com/sisimai/p5-sisimai")
    ap.add_argument("-v", action="store_true", help="print each miss")
    args = ap.parse_args()
    with (bounce_scoring.CORPUS / "bounces.csv").open(newline="", encoding="utf-8") as fh:
        seen = {row["file"] for row in csv.DictReader(fh)}
    expected = {f: o for f, o in labels(args.sisimai).items() if f not in seen}
    samples = args.sisimai / "set-of-emails" / "maildir" / "bsd"
    good = soft_or_none = soft_to_hard = hard = hard_to_soft = 0
    for name, want in sorted(expected.items()):
        parsed = parse_bounce((samples / name).read_bytes())
        got = bounce_scoring.file_outcome(parsed)
        good += got == want
        if want in ("soft", "none"):
            soft_or_none += 1
            soft_to_hard += got in ("hard", "mixed")
        if want == "hard":
            hard += 1
            hard_to_soft += got != "hard"
        if args.v and got != want:
            first = parsed.recipients[0] if parsed.recipients else None
            print(f"# {name}: expected {want}, got {got}", first and first.diagnostic[:100])
    figures.emit("bounce_unseen_files", len(expected), "files")
    figures.emit("bounce_unseen_accuracy", 100.0 * good / max(1, len(expected)), "%")
    figures.emit("bounce_unseen_soft_to_hard", 100.0 * soft_to_hard / max(1, soft_or_none), "%")
    figures.emit("bounce_unseen_hard_to_soft", 100.0 * hard_to_soft / max(1, hard), "%")


if __name__ == "__main__":
    main()
