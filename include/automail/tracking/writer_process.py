"""The hit writer in its own process: the api-server's workers only forward hits to it.

Why: the recorder's batches (SQLAlchemy, the machine rules) ran in a thread of the
api-server worker and held the GIL that worker's event loop needs; hits arriving during a
flush waited for it (bench/tracking.py: the slow answers clustered on the flushes, each
~16 ms of writer CPU and 60-100 ms of wall time at 1,000 hits/s). Now each worker starts
one writer, `python -m automail.tracking.writer_process`, and a forwarder thread sends it
the buffered hits as one JSON line per batch on its stdin. The writer runs the same
HitRecorder as before (one write path: its batches, rules and retries).

- Nothing counted twice: a batch is handed over once. A write to a dead writer fails
  before the writer could read the whole line (it records complete lines only), so that
  batch is resent to a new writer; a batch written whole is never resent.
- Bounded: the forwarder holds at most `max_pending` hits; a writer that cannot keep up
  makes the pipe block, and past the bound new hits are dropped and counted.
- A writer killed loses the hits it held and had not stored (at most its flush interval
  and the pipe's contents), as a killed worker's thread did; the next batch starts a new
  writer. A worker that stops closes the pipe: the writer stores what it holds and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from automail.tracking.pending import PendingHits
from automail.tracking.tokens import MailRef

log = logging.getLogger(__name__)

# One hit on the wire: scope, scope_id, customer_id, start, link_id, method, ua_class, epoch s.
Wire = tuple[str, int, int, int | None, int | None, str, str, float]


@dataclass
class ForwarderStats:
    forwarded: int = 0
    dropped: int = 0  # over max_pending (flood, or the writer stalled)
    writers_started: int = 0


class HitForwarder(PendingHits[Wire]):
    """The request side when the writer is a process: `record` appends to memory (as
    HitRecorder.record does), a thread forwards every `interval` seconds."""

    stats: ForwarderStats

    def __init__(
        self,
        interval: float = 0.05,
        max_pending: int = 200_000,
        on_first_write: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        store_url: Callable[[], str] | None = None,
    ):
        super().__init__(interval, max_pending, on_first_write)
        # The store this worker resolved is the writer's, whatever the writer's
        # environment would resolve on its own (an Airflow connection, say).
        self.store_url = store_url or _resolved_store_url
        self.clock = clock
        self.stats = ForwarderStats()
        self.writer: subprocess.Popen[bytes] | None = None

    def record(self, ref: MailRef, link_id: int | None, method: str, ua_class: str) -> bool:
        return self._append(
            (ref.scope, ref.scope_id, ref.customer_id, ref.start,
             link_id, method, ua_class, self.clock())
        )  # fmt: skip

    def drain(self) -> int:
        return self.forward()

    def forward(self) -> int:
        """Hand everything buffered to the writer now; returns hits handed over."""
        return self._hand_over(self._send)

    def _send(self, batch: list[Wire]) -> int:
        """One JSON line to the writer; a batch it could not have read whole is resent
        once to a new writer, else it goes back to wait (PendingHits._hand_over)."""
        line = json.dumps(batch, separators=(",", ":")).encode() + b"\n"
        retried = False
        while True:
            writer = self._running_writer()
            try:
                assert writer.stdin is not None
                writer.stdin.write(line)
                writer.stdin.flush()
                self.stats.forwarded += len(batch)
                return len(batch)
            except (BrokenPipeError, ValueError, OSError):
                # The writer died before reading this line whole: it recorded none of it.
                self._discard_writer()
                if retried:
                    raise
                retried = True

    def _running_writer(self) -> subprocess.Popen[bytes]:
        if self.writer is not None and self.writer.poll() is None:
            return self.writer
        if self.writer is not None:
            log.warning(
                "tracking: hit writer exited (%s); starting another", self.writer.returncode
            )
            self._discard_writer()
        self.writer = subprocess.Popen(
            [sys.executable, "-m", "automail.tracking.writer_process"],
            stdin=subprocess.PIPE,
            env={**os.environ, "AUTOMAIL_DB_URL": self.store_url()},
        )
        self.stats.writers_started += 1
        return self.writer

    def _discard_writer(self, timeout: float = 5.0) -> None:
        """Close the pipe (a live writer stores what it holds and exits) and reap it."""
        writer, self.writer = self.writer, None
        if writer is None:
            return
        if writer.stdin is not None:
            with contextlib.suppress(OSError):
                writer.stdin.close()
        try:
            writer.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("tracking: hit writer still storing after %ss; killed", timeout)
            writer.kill()
            writer.wait()

    def close(self, timeout: float = 30.0) -> None:
        """Forward what is left, then close the pipe and wait for the writer to store it."""
        self._stop.set()
        try:
            self.forward()
        finally:
            with self._drain_lock:
                self._discard_writer(timeout)


def _resolved_store_url() -> str:
    from automail.db import resolve_url

    return resolve_url()


def _ref(hit: list) -> MailRef:
    return MailRef(hit[0], int(hit[1]), int(hit[2]), hit[3])


def serve(lines: IO[bytes]) -> int:
    """The writer's side: record every hit of every complete line, store them with one
    HitRecorder (its thread flushes), and store the rest at end of input. Returns hits."""
    from automail.db import session_factory
    from automail.tracking.recorder import HitRecorder

    recorder = HitRecorder(session_factory())
    count = 0
    try:
        for line in lines:
            if not line.endswith(b"\n"):
                break  # a line cut short: its forwarder died mid-write; it resends nothing
            for hit in json.loads(line):
                at = datetime.fromtimestamp(hit[7], UTC)
                recorder.record(_ref(hit), hit[4], hit[5], hit[6], at=at)
                count += 1
    finally:
        recorder.close()  # the last flush; retried by the caller's restart if the store is down
    return count


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s automail-hit-writer %(message)s")
    # Ctrl-C at the api-server reaches its whole process group: the writer stops when its
    # worker closes the pipe (after the worker's last forward), not before.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    serve(sys.stdin.buffer)


def _stop(*_: object) -> None:
    raise SystemExit(0)  # out of the blocking read, through serve's last flush


if __name__ == "__main__":
    main()
