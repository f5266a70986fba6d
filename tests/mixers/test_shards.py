"""The write pass's read-ahead: order kept, errors raised where the tables are consumed, and a
reader left early closed (its files with it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mixers.shards import _read_ahead


def test_read_ahead_keeps_the_order_and_reads_in_another_thread() -> None:
    threads = set()

    def items() -> Iterator[int]:
        for i in range(100):
            threads.add(threading.current_thread().name)
            yield i

    assert list(_read_ahead(items(), depth=3)) == list(range(100))
    assert threads == {"mix-read-ahead"}


def test_an_error_while_reading_is_raised_to_the_writer_after_the_good_items() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("part-0003.parquet: truncated")

    seen = []
    with pytest.raises(OSError, match="part-0003.parquet: truncated"):
        for item in _read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_writer_that_stops_early_closes_the_reader() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(1_000)
        finally:
            closed.set()

    reader = _read_ahead(items(), depth=2)
    assert [next(reader) for _ in range(3)] == [0, 1, 2]
    reader.close()  # what a failing shard write does to the loop that consumes it
    assert closed.is_set()
    assert not any(t.name == "mix-read-ahead" for t in threading.enumerate())
