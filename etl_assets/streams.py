"""Helpers for streaming work: gathering items into groups of a size, and working one item ahead."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

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
            yield item
