"""Hits waiting in memory, bounded, drained by a daemon thread: the request side shared by
HitRecorder (drains into the store) and HitForwarder (drains into the writer process).

Appending is all a request does. Past `max_pending` waiting hits new ones are dropped
and counted (`stats.dropped`): a flood or a stalled drain never queues without end. A
drain that fails puts its batch back in front (within the bound) for the next tick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class DropCounter(Protocol):
    dropped: int


class PendingHits(Generic[T]):
    stats: DropCounter
    drain_failed = "tracking: handing over hits failed; retrying"

    def __init__(
        self, interval: float, max_pending: int, on_first_write: Callable[[], None] | None
    ):
        self.on_first_write = on_first_write  # once, after the first batch is handed over
        self.interval = interval
        self.max_pending = max_pending
        self._buffer: list[T] = []
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _append(self, hit: T) -> bool:
        with self._lock:
            if len(self._buffer) >= self.max_pending:
                self.stats.dropped += 1
                return False
            self._buffer.append(hit)
        if self._thread is None:
            self._start()
        return True

    def _hand_over(self, to: Callable[[list[T]], int]) -> int:
        """Give `to` everything waiting; on failure the batch goes back in front."""
        with self._drain_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            try:
                done = to(batch)
            except Exception:
                with self._lock:
                    self._buffer[:0] = batch[: self.max_pending]
                raise
            if done and self.on_first_write is not None:
                first, self.on_first_write = self.on_first_write, None
                first()
            return done

    def drain(self) -> int:
        """Hand over everything waiting now; returns hits handed over."""
        raise NotImplementedError

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="automail-hits", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.drain()
            except Exception:  # the store or the writer is down: keep the hits, retry
                log.exception(self.drain_failed)
