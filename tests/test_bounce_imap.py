"""The IMAP bounce mailbox (E1) against a real IMAP server: Dovecot on loopback, its
own configuration and maildir in a temporary folder, started and stopped here."""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bounce_helpers import dsn, sent_to_sink
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from automail.bounces.ingest import ingest_mailbox
from automail.bounces.mailbox import source_from_fields
from automail.db import session_factory
from automail.models import Bounce, Customer, Mail
from automail.smtp_sink import SmtpSink, free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
if not Path(DOVECOT).exists() and os.environ.get("CI") != "true":
    pytest.skip("dovecot not installed (required under CI)", allow_module_level=True)

USER, PASSWORD = "bounces", "s3cret"
CONFIG = """
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{root}/home/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass
class ImapServer:
    port: int
    maildir: Path
    delivered: int = 0

    def deliver(self, raw: bytes) -> None:
        """Drop a message into the user's maildir, as the MTA's local delivery would."""
        self.delivered += 1
        path = self.maildir / "new" / f"{time.time_ns()}.{self.delivered}.test"
        path.write_bytes(raw)
        shutil.chown(path, "nobody", "nogroup")

    def unseen(self) -> list[bytes]:
        with imaplib.IMAP4("127.0.0.1", self.port) as c:
            c.login(USER, PASSWORD)
            c.select("INBOX")
            return (c.uid("SEARCH", None, "UNSEEN")[1][0] or b"").split()

    def source(self, password: str = PASSWORD):  # noqa: ANN201
        fields = {"host": "127.0.0.1", "port": self.port, "login": USER, "password": password}
        return source_from_fields("imap", **fields, extra={"ssl": "false"})


@pytest.fixture
def imap_server() -> Iterator[ImapServer]:
    root = Path(tempfile.mkdtemp(prefix="automail-imap-"))
    root.chmod(0o755)  # the mail processes run as nobody
    port = free_port()
    for sub in ("run", "state"):
        (root / sub).mkdir()
    maildir = root / "home" / USER / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    shutil.chown(root / "home", "nobody", "nogroup")
    for path in [root / "home" / USER, maildir, *maildir.iterdir()]:
        shutil.chown(path, "nobody", "nogroup")
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    conf = root / "dovecot.conf"
    conf.write_text(CONFIG.format(root=root, port=port))
    subprocess.run([DOVECOT, "-c", str(conf)], check=True)
    try:
        _wait_for(port)
        yield ImapServer(port, maildir)
    finally:
        subprocess.run([DOVECOT, "-c", str(conf), "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise


def test_bounce_from_an_imap_mailbox_is_recorded_once_and_marked_read(
    engine: Engine, session: Session, smtp_sink: SmtpSink, imap_server: ImapServer
) -> None:
    mail, customer, data = sent_to_sink(engine, session, smtp_sink, "hanako@example.jp")
    imap_server.deliver(dsn(data, "hanako@example.jp"))
    imap_server.deliver(b"From: someone@example.jp\r\nSubject: hello\r\n\r\nnot a bounce\r\n")
    assert len(imap_server.unseen()) == 2

    summary = ingest_mailbox(session_factory(engine), imap_server.source())

    assert (summary.ingested, summary.matched, summary.hard, summary.applied) == (2, 1, 1, 1)
    assert imap_server.unseen() == []  # flagged \\Seen only after the rows were committed
    session.commit()
    session.expire_all()
    assert session.get(Mail, mail.id).bounce_outcome == "hard"
    assert session.get(Customer, customer.id).address_cleaned is True
    sources = session.scalars(select(Bounce.source).where(Bounce.mail_id == mail.id)).all()
    assert len(sources) == 1 and sources[0].startswith("imap:INBOX/")

    again = ingest_mailbox(session_factory(engine), imap_server.source())
    assert again.ingested == 0
    session.commit()
    assert session.scalar(select(func.count()).select_from(Bounce)) == 2


def test_a_refused_imap_login_names_the_connection_and_the_login(
    imap_server: ImapServer,
) -> None:
    with pytest.raises(ValueError, match=r"automail_bounce_mailbox.*IMAP login 'bounces'"):
        imap_server.source(password="wrong")
