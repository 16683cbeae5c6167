"""Reading ahead: the next chunk is parsed and checked while the store writes this one.

Parsing and checking are Python (they hold the GIL); writing is mostly waiting on
PostgreSQL (psycopg2 releases the GIL), so the two overlap on a second core: an
import's wall time becomes the larger of the two instead of their sum. At most
`depth` items wait in the queue, so memory stays a few chunks whatever the file size.
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


def ahead(items: Iterable[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield `items` in order, produced by a worker thread up to `depth` items ahead."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
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
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
