"""Kill the sending process with SIGKILL at random points, then let it recover (issue 8).

Each round queues fresh mails; a sender process (tests/faults/sender_child.py, the
real `run_send_cycle` over small batches) is started and SIGKILLed after a random
delay, several times, each new sender first recovering the dead one's lapsed
leases (lease_seconds=1 and a clock that moves 5 s per sender, passed as `now`);
the round ends with a sender that is left to finish. The SMTP sink runs in its
own process and writes one .eml per accepted message.

Then for every mail: `sent` with exactly one sink message carrying its Message-ID,
or `held` "in doubt" (reason stored, the worker died inside an SMTP transaction)
with at most one. Anything else is lost; a Message-ID received twice is duplicated.
Both must be 0.

Knobs: FAULTS_KILLS (PostgreSQL kills, default 100), FAULTS_SQLITE_KILLS (default 20),
FAULTS_KILLS_PER_ROUND (4), FAULTS_MAILS_PER_ROUND (40), FAULTS_SEED (8).
Delays are drawn from a seeded RNG, scaled to the measured time of one uninterrupted
run, so a run is reproducible in its choices (timing itself is the OS's).
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from automail.db import session_factory
from automail.models import Mail, SendAttempt

from .conftest import (
    SENDER_CHILD,
    FaultTotals,
    RelayProcess,
    SinkProcess,
    env_int,
    fault_shop,
    judge,
    put_settings,
    queue_mails,
)

CLOCK_STEP = timedelta(seconds=5)  # > lease_seconds: each sender sees the last one's lease lapsed


class ForkServer:
    """Drives sender_child.py `serve`: one forked sender per `start`, killable by pid."""

    def __init__(self, url: str, port: int, smtp_conn: str | None = None) -> None:
        env = os.environ.copy()
        if smtp_conn:
            env["FAULTS_SMTP_CONN"] = smtp_conn
        self.proc = subprocess.Popen(
            [sys.executable, str(SENDER_CHILD), "serve", url, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("eof")

    def expect(self, word: str, timeout: float = 60) -> str:
        line = self.lines.get(timeout=timeout)
        if line.startswith("error") or line == "eof":
            raise AssertionError(f"sender failed: {line}")
        while not line.startswith(word):  # e.g. "done" before "exit"
            line = self.lines.get(timeout=timeout)
            if line.startswith("error") or line == "eof":
                raise AssertionError(f"sender failed: {line}")
        return line

    def start(self, run_id: str, now: datetime) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {run_id} {now.isoformat()}\n")
        self.proc.stdin.flush()
        pid = int(self.expect("pid").split()[1])
        self.expect("ready")
        return pid

    def finish(self, kill: bool, timeout: float = 120) -> int:
        """SIGKILL the sender now (kill) or let it finish; returns its exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("kill\n" if kill else "wait\n")
        self.proc.stdin.flush()
        return int(self.expect("exit", timeout).split()[2])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _open_mails(engine: Engine, ids: list[int]) -> int:
    """Mails of the round not yet in a final state (still to be sent by someone)."""
    with session_factory(engine)() as s:
        return (
            s.scalar(
                select(func.count()).where(Mail.id.in_(ids), Mail.status.in_(("unsent", "error")))
            )
            or 0
        )


@pytest.mark.parametrize(
    ("store_url", "kills_wanted"),
    [("postgres", env_int("FAULTS_KILLS", 100)), ("sqlite", env_int("FAULTS_SQLITE_KILLS", 20))],
    indirect=["store_url"],
)
def test_sigkill_the_sender_loses_nothing_and_sends_nothing_twice(
    engine: Engine, store_url: str, kills_wanted: int, tmp_path: Path, fault_totals: FaultTotals
) -> None:
    with SinkProcess(tmp_path / "sink") as sink:
        _kill_rounds(engine, store_url, sink, None, kills_wanted, fault_totals, "kill sender")


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_sigkill_a_relay_sender_with_pipelined_commands_outstanding(
    engine: Engine, store_url: str, tmp_path: Path, fault_totals: FaultTotals
) -> None:
    """The relay path: STARTTLS + AUTH, PIPELINING, 4 parallel lanes per batch, RTT
    4 ms, so kills land with envelopes and DATA in flight on several connections."""
    kills = env_int("FAULTS_RELAY_KILLS", 16)
    with RelayProcess(tmp_path / "relay", rtt_ms=4) as relay:
        put_settings(engine, send_commit_group=3)  # several groups per lane
        summary = _kill_rounds(
            engine, store_url, relay, relay.connection(4), kills, fault_totals, "kill relay sender"
        )
    fault_totals.count("relay_kills", summary["kills"])
    fault_totals.count("relay_lost", summary["lost"])
    fault_totals.count("relay_duplicated", summary["duplicated"])


def _kill_rounds(
    engine: Engine,
    store_url: str,
    sink: SinkProcess,
    smtp_conn: str | None,
    kills_wanted: int,
    fault_totals: FaultTotals,
    label: str,
) -> dict:
    per_round = env_int("FAULTS_KILLS_PER_ROUND", 4)
    mails_per_round = env_int("FAULTS_MAILS_PER_ROUND", 40)
    rng = random.Random(env_int("FAULTS_SEED", 8))
    shop = fault_shop(engine)
    put_settings(engine, lease_seconds=1, send_batch_size=5 if smtp_conn is None else 20)
    clock = datetime.now(UTC)
    all_ids: list[int] = []
    runs = kills = 0

    server = ForkServer(store_url, sink.port, smtp_conn)
    try:

        def sender(tag: str) -> int:
            nonlocal clock, runs
            clock += CLOCK_STEP
            runs += 1
            return server.start(f"{tag}-{runs}", clock)

        # Calibrate: how long does one uninterrupted run over a round's queue take?
        all_ids += queue_mails(engine, shop, mails_per_round, "calibrate")
        t0 = time.monotonic()
        sender("calibrate")
        assert server.finish(kill=False) == 0
        per_mail = (time.monotonic() - t0) / mails_per_round

        rounds = 0
        while kills < kills_wanted:
            rounds += 1
            assert rounds <= 3 * kills_wanted // per_round + 5, "kills keep missing the run"
            ids = queue_mails(engine, shop, mails_per_round, f"round{rounds}")
            all_ids += ids
            for _ in range(per_round):
                if kills >= kills_wanted:
                    break
                window = per_mail * (_open_mails(engine, ids) + 2)
                sender(f"r{rounds}")
                time.sleep(rng.uniform(0, window))
                code = server.finish(kill=True)
                if code == -signal.SIGKILL:
                    kills += 1
                else:
                    assert code == 0, f"sender exited with {code}"
            sender(f"r{rounds}-finish")  # recovers the last kill's leases, sends the rest
            assert server.finish(kill=False) == 0
        sender("final")
        assert server.finish(kill=False) == 0
    finally:
        server.close()
    counts = sink.message_id_counts()

    with session_factory(engine)() as session:
        verdict = judge(session, all_ids, counts)
        leftover = session.scalar(
            select(func.count()).select_from(SendAttempt).where(SendAttempt.outcome == "in_flight")
        )
        in_doubt_attempts = session.scalar(
            select(func.count()).select_from(SendAttempt).where(SendAttempt.outcome == "in_doubt")
        )
    summary = {
        "store": engine.dialect.name,
        "runs": runs,
        "kills": kills,
        "mails": verdict.mails,
        "sent": verdict.sent,
        "in_doubt_held": verdict.in_doubt,
        "in_doubt_delivered": verdict.in_doubt_delivered,
        "lost": len(verdict.lost),
        "duplicated": len(verdict.duplicated),
    }
    fault_totals.lines.append(f"{label}: {json.dumps(summary)}")
    fault_totals.runs += runs
    fault_totals.kills += kills
    fault_totals.mails += verdict.mails
    fault_totals.sent += verdict.sent
    fault_totals.in_doubt += verdict.in_doubt
    fault_totals.lost += len(verdict.lost)
    fault_totals.duplicated += len(verdict.duplicated)

    assert kills >= kills_wanted
    assert verdict.lost == [], f"lost mails (no sink message, no visible state): {verdict.lost}"
    assert verdict.duplicated == [], f"Message-IDs received twice: {verdict.duplicated}"
    assert verdict.strays == [], f"sink messages that match no mail: {verdict.strays}"
    assert verdict.sent + verdict.in_doubt == verdict.mails
    assert leftover == 0  # no attempt is left in_flight after recovery
    assert in_doubt_attempts >= verdict.in_doubt
    return summary
