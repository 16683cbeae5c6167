"""Reading ahead: the next chunk is parsed and checked while the store writes this one.

Parsing and checking are Python (they hold the GIL); writing is mostly waiting on
PostgreSQL (psycopg2 releases the GIL), so the two overlap on a second core: an
import's wall time becomes the larger of the two instead of their sum. The producer
starts the next item only once the consumer has taken the last one, so at most two
items are alive (one written, one made or waiting): memory stays two chunks whatever
the file size (a queue of one let a third be made: +180 MB peak at 50,000-row chunks).
An error in the producer reaches the consumer at that point in the sequence; a
consumer that stops early (error, or a killed writer) stops the producer too.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ahead(items: Iterable[T]) -> Generator[T, None, None]:
    """Yield `items` in order, each made by a worker thread while the last is used."""
    q: queue.Queue[object] = queue.Queue(maxsize=1)
    taken = threading.Semaphore(0)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand `item` over and wait until the consumer has taken it (or stopped)."""
        q.put(item)  # never blocks: the last item was taken before this one was made
        while not stop.is_set():
            if taken.acquire(timeout=0.1):
                return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failed(exc))
            return
        put(_DONE)

    worker = threading.Thread(target=produce, name="import-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            taken.release()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
