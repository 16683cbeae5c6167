"""Where bounces come from: a folder / maildir (the embedded default) or an IMAP mailbox.

The mailbox is the Airflow connection `automail_bounce_mailbox` (F2: no credential in
code):
- conn_type `fs` or `path`: extra `{"path": DIR}` (or host = DIR). DIR is a maildir
  (has `new/` and `cur/`) or a plain folder of `.eml` files. A message that has been
  recorded is moved to `DIR/processed/`, so nothing is lost and nothing is read twice.
- conn_type `imap`: host, port, login, password; extras `folder` (default INBOX), `ssl`
  (default true; implicit TLS, port 993), `starttls` (default false). UNSEEN messages
  are fetched with BODY.PEEK[] (not marking them read) and flagged \\Seen only after
  their bounce rows are committed.
Without a connection the embedded default is the folder `$AUTOMAIL_HOME/var/bounces`.

A source yields `Incoming` messages and is told `done(message)` after the commit: a
crash in between leaves the message unprocessed, and re-ingesting it is a no-op
(fingerprints), so at-least-once reading gives exactly-once recording.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import os
import re
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from automail.db import project_home

CONN_ID = "automail_bounce_mailbox"
ENV_VAR = "AIRFLOW_CONN_AUTOMAIL_BOUNCE_MAILBOX"
PROCESSED = "processed"
MAX_MESSAGE_BYTES = 10_000_000  # a larger file is read only this far (the parser cuts at 5 MB)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    raw: bytes
    ref: str  # where it came from: file path or "imap:FOLDER/UID", stored as Bounce.source


class BounceSource(Protocol):
    name: str

    def messages(self) -> Iterator[Incoming]: ...

    def done(self, message: Incoming) -> None: ...

    def close(self) -> None: ...


class FolderSource:
    """A maildir or a folder of .eml files; recorded messages move to `processed/`."""

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise ValueError(f"bounce mailbox path {str(self.root)!r}: not a directory")
        self.name = f"folder:{self.root}"
        self.processed = self.root / PROCESSED

    def _files(self) -> list[Path]:
        if (self.root / "new").is_dir() and (self.root / "cur").is_dir():  # maildir
            dirs = [self.root / "new", self.root / "cur"]
            files = [p for d in dirs for p in d.iterdir() if p.is_file()]
        else:
            files = [p for p in self.root.iterdir() if p.is_file() and p.suffix.lower() == ".eml"]
        # Oldest first, so consecutive failures are counted in arrival order.
        return sorted((p for p in files if not p.name.startswith(".")), key=_arrival)

    def messages(self) -> Iterator[Incoming]:
        for path in self._files():
            try:
                with path.open("rb") as fh:
                    raw = fh.read(MAX_MESSAGE_BYTES)
            except FileNotFoundError:  # taken by a concurrent run
                continue
            yield Incoming(raw, str(path))

    def done(self, message: Incoming) -> None:
        path = Path(message.ref)
        self.processed.mkdir(exist_ok=True)
        target = self.processed / path.name
        n = 1
        while target.exists():  # never overwrite: keep every received message
            target = self.processed / f"{path.stem}.{n}{path.suffix}"
            n += 1
        # FileNotFoundError: a concurrent run recorded and moved it too.
        with contextlib.suppress(FileNotFoundError):
            shutil.move(str(path), str(target))

    def close(self) -> None:
        pass


def _arrival(path: Path) -> tuple[float, str]:
    try:
        return path.stat().st_mtime, path.name
    except FileNotFoundError:
        return 0.0, path.name


class ImapSource:
    """UNSEEN messages of one IMAP folder (imaplib); flagged \\Seen once recorded."""

    def __init__(
        self,
        host: str,
        port: int | None,
        login: str,
        password: str,
        folder: str = "INBOX",
        use_ssl: bool = True,
        starttls: bool = False,
        timeout: float = 60.0,
    ) -> None:
        if not host:
            raise ValueError(f"connection {CONN_ID!r}: conn_type imap needs a host")
        if not login:
            raise ValueError(f"connection {CONN_ID!r}: conn_type imap needs a login")
        self.folder = folder
        self.name = f"imap:{login}@{host}/{folder}"
        if use_ssl:
            self.conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                host, port or 993, ssl_context=ssl.create_default_context(), timeout=timeout
            )
        else:
            self.conn = imaplib.IMAP4(host, port or 143, timeout=timeout)
            if starttls:
                self.conn.starttls(ssl.create_default_context())
        try:
            self.conn.login(login, password or "")
        except imaplib.IMAP4.error as exc:
            self.conn.shutdown()
            raise ValueError(
                f"connection {CONN_ID!r}: IMAP login {login!r} at {host}:{port} refused: {exc}"
            ) from exc
        status, data = self.conn.select(_quote(folder))
        if status != "OK":
            raise ValueError(f"IMAP folder {folder!r}: cannot select it ({data!r})")

    def messages(self) -> Iterator[Incoming]:
        status, data = self.conn.uid("SEARCH", "UNSEEN")
        if status != "OK":
            raise RuntimeError(f"IMAP SEARCH UNSEEN failed in {self.folder!r}: {data!r}")
        for uid in (data[0] or b"").split():
            status, parts = self.conn.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
            raw = next((p[1] for p in parts or [] if isinstance(p, tuple)), None)
            if status != "OK" or raw is None:
                log.warning("IMAP FETCH of UID %s in %s failed: %r", uid, self.folder, parts)
                continue
            yield Incoming(bytes(raw), f"imap:{self.folder}/{uid.decode()}")

    def done(self, message: Incoming) -> None:
        uid = message.ref.rsplit("/", 1)[1]
        self.conn.uid("STORE", uid, "+FLAGS", "(\\Seen)")

    def close(self) -> None:
        try:
            self.conn.close()
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _quote(folder: str) -> str:
    return folder if re.fullmatch(r"[\w./-]+", folder) else '"' + folder.replace('"', r"\"") + '"'


def _flag(value: object, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def default_folder() -> Path:
    return project_home() / "var" / "bounces"


def source_from_fields(
    conn_type: str,
    host: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
    extra: dict | None = None,
) -> BounceSource:
    """Build a source from Airflow connection fields; bad fields raise ValueError naming them."""
    extra = extra or {}
    kind = (conn_type or "").lower()
    if kind in ("fs", "path", "file", "folder", "maildir"):
        path = extra.get("path") or host
        if not path:
            raise ValueError(f"connection {CONN_ID!r}: conn_type {conn_type!r} needs extra path")
        return FolderSource(path)
    if kind == "imap":
        return ImapSource(
            host or "",
            int(port) if port else None,
            login or "",
            password or "",
            folder=str(extra.get("folder") or "INBOX"),
            use_ssl=_flag(extra.get("ssl"), True),
            starttls=_flag(extra.get("starttls"), False),
            timeout=float(extra.get("timeout", 60)),
        )
    raise ValueError(f"connection {CONN_ID!r}: conn_type {conn_type!r} is not fs, path or imap")


def open_source() -> BounceSource:
    """The configured mailbox: the Airflow connection, else the embedded default folder."""
    if ENV_VAR in os.environ or "AIRFLOW_HOME" in os.environ:
        try:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(CONN_ID)
        except Exception as exc:  # no Airflow or no such connection: embedded default
            if ENV_VAR in os.environ:  # set but unreadable: say so, never read elsewhere
                raise ValueError(f"{ENV_VAR}: cannot read the connection: {exc}") from exc
            log.debug("no %s connection (%s); using %s", CONN_ID, exc, default_folder())
        else:
            return source_from_fields(
                conn.conn_type or "",
                conn.host,
                conn.port,
                conn.login,
                conn.password,
                conn.extra_dejson,
            )
    folder = default_folder()
    folder.mkdir(parents=True, exist_ok=True)
    return FolderSource(folder)
