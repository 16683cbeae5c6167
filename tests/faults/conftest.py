"""Fault-suite fixtures: the totals collector, the SMTP sink as its own process, queues.

Every test here carries the `faults` marker (added below), so `pytest -m faults`
runs just this suite; plain `pytest` runs it too (CI). At the end of a run that
executed any fault test, the terminal summary prints one line per scenario and the
totals line:

    faults: runs=… kills=… mails=… lost=0 duplicated=0 inputs=… crashes=0 [name=N …]

Named counters (`FaultTotals.count(name, n)`) follow the fixed ones, sorted by name:
each new path or probe class adds its own (e.g. `forged_bounces_applied=0`), and a
counter that must stay 0 is asserted by the test that owns it.

Knobs (environment variables) are documented in each test module's docstring.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from automail import settings
from automail.db import session_factory
from automail.models import Mail, Shop
from automail.sample_data import make_shop
from automail.smtp_sink import LOOPBACK, free_port

HERE = Path(__file__).resolve().parent
SENDER_CHILD = HERE / "sender_child.py"


def env_int(name: str, default: int) -> int:
    """An integer knob from the environment (FAULTS_*), falling back to `default`."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


# --- totals -------------------------------------------------------------------------


@dataclass
class FaultTotals:
    """What the suite did; printed at the end of the run (see module doc)."""

    runs: int = 0  # send runs started (child processes / cycles)
    kills: int = 0  # SIGKILLs that hit a running sender
    mails: int = 0  # mails put through a fault scenario
    sent: int = 0
    in_doubt: int = 0  # held "in doubt" after a kill (visible, operator checks)
    lost: int = 0
    duplicated: int = 0
    inputs: int = 0  # hostile inputs tried (hypothesis examples and fixed cases)
    crashes: int = 0  # unexpected exception types / batches that stopped
    lines: list[str] = field(default_factory=list)  # one per scenario
    named: Counter[str] = field(default_factory=Counter)  # per path / probe class

    def count(self, name: str, n: int = 1) -> None:
        """Add `n` to a named counter; `n=0` still makes it appear (a proven zero)."""
        self.named[name] += n

    def line(self) -> str:
        extra = "".join(f" {name}={self.named[name]}" for name in sorted(self.named))
        return (
            f"faults: runs={self.runs} kills={self.kills} mails={self.mails} "
            f"lost={self.lost} duplicated={self.duplicated} inputs={self.inputs} "
            f"crashes={self.crashes}{extra}"
        )

    @property
    def touched(self) -> bool:
        return bool(self.lines or self.inputs or self.runs or self.named)


TOTALS = FaultTotals()


@pytest.fixture(scope="session")
def fault_totals() -> FaultTotals:
    return TOTALS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest object)
    if not TOTALS.touched:
        return
    terminalreporter.section("fault suite totals")
    for line in TOTALS.lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line(TOTALS.line())


# --- the SMTP sink in its own process -----------------------------------------------


class SinkProcess:
    """`python -m automail.smtp_sink` on a loopback port, one .eml file per accepted message.

    Its own process, so killing a sender never touches it, and its files survive.
    """

    def __init__(self, out_dir: Path, port: int | None = None, extra: list[str] | None = None):
        self.dir = out_dir
        self.port = port or free_port()
        self.extra = extra or []  # more sink options, e.g. --delay-ms 15
        self.proc: subprocess.Popen | None = None

    def start(self) -> SinkProcess:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "automail.smtp_sink",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SMTP sink exited with {self.proc.returncode}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
                    if s.recv(3) == b"220":
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"SMTP sink on port {self.port} did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: a clean controller stop
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def message_id_counts(self) -> Counter[str]:
        """Message-ID -> number of accepted messages carrying it (from the .eml files)."""
        counts: Counter[str] = Counter()
        parser = BytesHeaderParser()
        for path in self.dir.glob("*.eml"):
            with path.open("rb") as fh:
                mid = parser.parse(fh).get("Message-ID")
            counts[str(mid).strip() if mid else "<none>"] += 1
        return counts

    def __enter__(self) -> SinkProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RelayProcess(SinkProcess):
    """`python -m automail.relay_sim`: STARTTLS + AUTH + PIPELINING behind a latency
    proxy, in its own process, one .eml file per accepted message (as SinkProcess)."""

    def __init__(self, base: Path, rtt_ms: float) -> None:
        super().__init__(base / "messages")
        self.base, self.rtt_ms = base, rtt_ms
        self.ca_file = ""

    def start(self) -> RelayProcess:
        self.base.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "automail.relay_sim", "--dir", str(self.base),
             "--rtt-ms", str(self.rtt_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        _, port, _direct, self.ca_file = self.proc.stdout.readline().split()
        self.port = int(port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the relay stops at the end of its input
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def connection(self, connections: int) -> str:
        """The Airflow connection JSON a sender uses for this relay."""
        import json

        return json.dumps(
            {
                "conn_type": "smtp",
                "host": LOOPBACK,
                "port": self.port,
                "login": "relay-user",
                "password": "relay-password",
                "extra": {"disable_ssl": True, "ca_file": self.ca_file,
                          "connections": connections, "timeout": 10},
            }
        )  # fmt: skip

    def message_id_counts(self) -> Counter[str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        return super().message_id_counts()


@pytest.fixture
def sink_process(tmp_path: Path) -> Iterator[SinkProcess]:
    with SinkProcess(tmp_path / "sink") as sink:
        yield sink


# --- queues -------------------------------------------------------------------------

_seq = itertools.count()


def put_settings(engine: Engine, **values: object) -> None:
    with session_factory(engine)() as session:
        for key, value in values.items():
            settings.put(session, key, value, actor="fault-suite")
        session.commit()


def fault_shop(engine: Engine, code: str = "tea") -> Shop:
    with session_factory(engine)() as session:
        shop = session.scalar(select(Shop).where(Shop.code == code)) or make_shop(session, code)
        session.commit()
        return shop


def queue_mails(engine: Engine, shop: Shop, n: int, tag: str) -> list[int]:
    """Insert `n` due, unsent auto mails; returns their ids (ascending)."""
    batch = f"{tag}-{next(_seq)}"
    rows = [
        {
            "shop_id": shop.id,
            "kind": "order_confirmation",
            "source_key": f"fault:{batch}:{i}",
            "to_address": f"c{i}.{batch}@example.jp",
            "from_address": shop.from_address,
            "from_name": shop.from_name,
            "reply_to": shop.reply_to,
            "subject": f"【{shop.name}】ご注文ありがとうございます ({batch}-{i})",
            "body_text": f"お客様 {i} 様\nご注文を承りました。\n",
        }
        for i in range(n)
    ]
    with session_factory(engine)() as session:
        session.execute(insert(Mail), rows)
        session.commit()
        return list(
            session.scalars(
                select(Mail.id).where(Mail.source_key.like(f"fault:{batch}:%")).order_by(Mail.id)
            )
        )


@dataclass
class Verdict:
    """Exactly-once check of mails against the sink (see `judge`)."""

    mails: int = 0
    sent: int = 0
    in_doubt: int = 0
    in_doubt_delivered: int = 0  # in doubt, and the sink did get it once
    lost: list[int] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)  # sink messages matching no mail


def judge(session: Session, mail_ids: list[int], counts: Counter[str]) -> Verdict:
    """Every mail is `sent` with exactly one sink message, or `held` in doubt (reason
    stored) with at most one; anything else is lost. A Message-ID twice is duplicated."""
    session.commit()  # a fresh snapshot: other processes' commits (SQLite WAL)
    session.expire_all()
    rows = session.execute(
        select(Mail.id, Mail.status, Mail.message_id, Mail.last_error, Mail.claimed_by).where(
            Mail.id.in_(mail_ids)
        )
    ).all()
    v = Verdict(mails=len(mail_ids))
    known = set()
    for mail_id, status, message_id, last_error, claimed_by in rows:
        n = counts.get(message_id, 0) if message_id else 0
        known.add(message_id)
        if status == "sent" and n == 1 and claimed_by is None:
            v.sent += 1
        elif status == "held" and n <= 1 and last_error and "in doubt" in last_error:
            v.in_doubt += 1
            v.in_doubt_delivered += n
        elif n <= 1:
            v.lost.append(mail_id)
    if len(rows) != len(mail_ids):
        v.lost.extend(sorted(set(mail_ids) - {r[0] for r in rows}))
    v.duplicated = sorted(mid for mid, n in counts.items() if n > 1)
    v.strays = sorted(mid for mid in counts if mid not in known)
    return v
