"""shared/jetstream.py: the pure parts of the one pull worker. Its settle on a real NATS
is in tests/system/test_pull_worker.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from shared import topology
from shared.jetstream import Delivery, PullWorker, chunks, pull_size


def test_pull_size_asks_for_the_free_slots_or_waits_for_a_whole_batch() -> None:
    assert pull_size(8, 0, 1) == 8
    assert pull_size(8, 7, 1) == 1
    assert pull_size(8, 8, 1) == 0
    assert pull_size(500, 0, 500) == 500
    assert pull_size(500, 1, 500) == 0  # a batch in hand: the next waits for it
    assert pull_size(3, 5, 1) == 0


def test_chunks_cut_in_order_and_keep_everything() -> None:
    assert list(chunks([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(chunks([1], 64)) == [[1]]
    assert list(chunks([], 3)) == []


def test_a_worker_needs_room_for_one_message() -> None:
    with pytest.raises(ValueError):
        PullWorker(None, topology.FETCHER_REQUESTS, _noop, service="t", max_in_flight=0)  # type: ignore[arg-type]


async def _noop(batch: Sequence[Delivery]) -> None:
    return None
