"""Opt-outs that could not be written at once (C10: an unsubscribe is never lost).

When the store cannot take the write (SQLite locked past the wait, PostgreSQL down),
the public page appends the verified token to a JSON-lines spool file, fsynced before
the customer is told "received", and the next newsletter run applies it with the time
it was asked for. Applying is idempotent: a spool file is renamed away first (new
opt-outs start a fresh file), applied in the caller's transaction and deleted only
after that transaction commits; a file left by a failed run is applied by the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from automail.campaigns.unsubscribe import BadToken, apply_unsubscribe
from automail.db import project_home

ENV_PATH = "AUTOMAIL_UNSUBSCRIBE_SPOOL"
log = logging.getLogger(__name__)


def spool_path() -> Path:
    env = os.environ.get(ENV_PATH)
    return Path(env) if env else project_home() / "var" / "unsubscribe-spool.jsonl"


def record(token: str, at: datetime | None = None, path: Path | None = None) -> Path:
    """Append one opt-out durably (O_APPEND + fsync); OSError if it cannot be kept."""
    path = path or spool_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"t": token, "at": (at or datetime.now(UTC)).isoformat()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())  # one short write: lines of two writers never mix
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _claim(path: Path) -> list[Path]:
    """The spool renamed away (if any) plus files a failed earlier run left."""
    if path.exists():
        with contextlib.suppress(FileNotFoundError):  # another run took it first
            path.rename(path.with_name(f"{path.name}.applying.{uuid.uuid4().hex}"))
    return sorted(path.parent.glob(f"{path.name}.applying.*"))


def pending_count(path: Path | None = None) -> int:
    path = path or spool_path()
    files = ([path] if path.exists() else []) + list(path.parent.glob(f"{path.name}.applying.*"))
    return sum(1 for f in files for line in f.read_text().splitlines() if line.strip())


def apply_pending(session: Session, path: Path | None = None) -> int:
    """Apply every spooled opt-out in `session`'s transaction; returns how many."""
    path = path or spool_path()
    if not path.parent.exists():
        return 0
    files = _claim(path)
    applied = 0
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                apply_unsubscribe(session, item["t"], now=datetime.fromisoformat(item["at"]))
                applied += 1
            except (BadToken, KeyError, ValueError) as exc:  # verified when spooled
                log.warning("unsubscribe spool %s: line not applied (%s): %.120s", f, exc, line)
    if files:

        @event.listens_for(session, "after_commit", once=True)
        def _done(_session: Session) -> None:
            for f in files:
                f.unlink(missing_ok=True)

    return applied
