"""The unsubscribe signing key: never the value once published in scripts/env.sh (issue 12.12)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from automail.signing import PUBLISHED_KEYS, MissingSecretKey, secret_key

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key", sorted(PUBLISHED_KEYS))
def test_published_demo_key_is_refused(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("AUTOMAIL_SECRET_KEY", key)
    with pytest.raises(MissingSecretKey, match="published demo value"):
        secret_key()


def _key_after_sourcing(root: Path) -> str:
    out = subprocess.run(
        [
            "bash",
            "-c",
            'unset AUTOMAIL_SECRET_KEY; source scripts/env.sh; echo "$AUTOMAIL_SECRET_KEY"',
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_env_sh_makes_one_random_key_per_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkouts = []
    for name in ("a", "b"):
        (tmp_path / name / "scripts").mkdir(parents=True)
        shutil.copy(REPO / "scripts" / "env.sh", tmp_path / name / "scripts" / "env.sh")
        checkouts.append(tmp_path / name)
    first = _key_after_sourcing(checkouts[0])
    assert first == _key_after_sourcing(checkouts[0])  # kept in var/, stable
    assert first != _key_after_sourcing(checkouts[1])  # random per checkout
    key_file = checkouts[0] / "var" / "secret_key"
    assert key_file.read_text() == first and len(first) >= 40
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first not in PUBLISHED_KEYS
    monkeypatch.setenv("AUTOMAIL_SECRET_KEY", first)
    assert secret_key() == first.encode()
