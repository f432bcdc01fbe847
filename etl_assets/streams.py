"""Helpers for streaming work: gathering items into groups of a size, and working one item ahead.

The one place items are grouped: CSV parts into chunks, chunks into statements (by rows), contacts
into HubSpot batches (by count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

T = TypeVar("T")


def gathered(items: Iterable[T], at_least: int, size: Callable[[T], int]) -> Iterator[list[T]]:
    """`items` in consecutive groups whose sizes add up to `at_least` or more (the last may be less)."""
    group: list[T] = []
    total = 0
    for item in items:
        group.append(item)
        total += size(item)
        if total >= at_least:
            yield group
            group, total = [], 0
    if group:
        yield group


def _one(_item: object) -> int:
    return 1


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter): `itertools.batched` of Python 3.12, as lists."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return gathered(items, size, _one)


def prefetched(items: Iterable[T]) -> Iterator[T]:
    """`items`, each computed in a worker thread while the caller handles the one before.

    Arrow's kernels and the database driver's socket waits release the GIL, so preparing the
    next chunk and the server ingesting this one overlap on two cores.
    """
    iterator, done = iter(items), object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as worker:
        upcoming = worker.submit(next, iterator, done)
        while (item := upcoming.result()) is not done:
            upcoming = worker.submit(next, iterator, done)
            yield cast(T, item)
