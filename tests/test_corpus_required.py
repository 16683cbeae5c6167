"""CI honesty: under CI=true a missing shared bounce corpus fails the run instead of
skipping its tests (as a missing PostgreSQL does); elsewhere they skip, saying where
the corpus was looked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = "tests/test_bounce_parser.py::test_every_corpus_file_parses_cleanly"


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUTOMAIL_SHARED": str(tmp_path / "no-shared-here")}
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("ci", ["true", None])
def test_a_missing_bounce_corpus_fails_under_ci_and_skips_elsewhere(
    tmp_path: Path, ci: str | None
) -> None:
    run = _run(tmp_path, ci)
    out = run.stdout + run.stderr
    assert "no-shared-here/corpora/bounces" in out, out[-2000:]
    if ci == "true":
        assert run.returncode != 0 and "CI must run the bounce corpus tests" in out, out[-2000:]
    else:
        assert run.returncode == 0 and "1 skipped" in out, out[-2000:]
