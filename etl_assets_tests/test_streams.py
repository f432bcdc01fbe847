import threading

import pytest

from etl_assets.streams import batched, gathered, prefetched

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


def test_gathered_groups_reach_the_size_and_keep_the_remainder():
    groups = list(gathered([3, 4, 5, 1, 1, 2], at_least=6, size=lambda item: item))
    assert groups == [[3, 4], [5, 1], [1, 2]]
    assert list(gathered([], at_least=6, size=len)) == []


def test_batched_groups_by_count():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched(iter([]), 3)) == []
    with pytest.raises(ValueError):
        batched([1], 0)


def test_prefetched_computes_the_next_item_in_another_thread_and_passes_errors_on():
    workers = []

    def items():
        for number in range(3):
            workers.append(threading.current_thread().name)
            yield number
        raise ValueError("bad row")

    received = []
    with pytest.raises(ValueError, match="bad row"):
        for item in prefetched(items()):
            received.append(item)
    assert received == [0, 1, 2]
    assert all(name.startswith("prepare") for name in workers)
