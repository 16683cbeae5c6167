"""Reading ahead (imports): order kept, errors raised where they happened, bounded, stoppable."""

from __future__ import annotations

import threading
import time

import pytest

from automail.imports.pipeline import ahead


def test_items_arrive_in_order_and_all_of_them():
    assert list(ahead(iter(range(1000)))) == list(range(1000))
    assert list(ahead(iter([]))) == []


def test_a_producer_error_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("line 7: broken")

    got = []
    with pytest.raises(ValueError, match="line 7: broken"):
        for item in ahead(items()):
            got.append(item)
    assert got == [1, 2]


def test_the_producer_runs_one_item_ahead_at_most():
    made = []

    def items():
        for i in range(100):
            made.append(i)
            yield i

    it = ahead(items())
    assert next(it) == 0
    time.sleep(0.3)
    # the one in use, and the next one made and waiting: never a third (memory)
    assert made == [0, 1]
    assert next(it) == 1
    time.sleep(0.3)
    assert made == [0, 1, 2]
    it.close()


def test_a_consumer_that_stops_stops_the_producer():
    before = threading.active_count()

    def items():
        i = 0
        while True:  # endless: only the consumer's stop ends it
            yield i
            i += 1

    for item in ahead(items()):
        if item == 5:
            break
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_a_consumer_error_stops_the_producer_and_propagates():
    def items():
        yield from range(10_000)

    with pytest.raises(RuntimeError, match="store down"):
        for item in ahead(items()):
            if item == 3:
                raise RuntimeError("store down")
    # the worker has been joined: it is no longer producing
    assert not any(t.name == "import-read-ahead" for t in threading.enumerate())
