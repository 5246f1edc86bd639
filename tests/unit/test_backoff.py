"""shared/backoff.py: the one retry curve and the iterator of waits built on it."""

from __future__ import annotations

from itertools import islice

from shared.backoff import backoff_delays, capped_backoff


def test_capped_backoff_doubles_from_base_up_to_cap() -> None:
    assert [capped_backoff(n, 1, 60) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_capped_backoff_counts_attempt_zero_as_one() -> None:
    assert capped_backoff(0, 0.5, 10) == 0.5
    assert capped_backoff(-3, 0.5, 10) == 0.5


def test_capped_backoff_huge_attempt_is_the_cap() -> None:
    assert capped_backoff(10_000, 0.25, 2) == 2


def test_backoff_delays_walks_capped_backoff() -> None:
    for base, cap in [(0.5, 10), (1.0, 30), (0.25, 2), (0.2, 10.0), (0.5, 1.0)]:
        got = list(islice(backoff_delays(base, cap), 40))
        assert got == [capped_backoff(n, base, cap) for n in range(1, 41)]


def test_backoff_delays_are_the_loops_numbers() -> None:
    # The retry loops that use it (start-up dependencies, reconciliation, the embedded
    # PostgreSQL wait, the writer's batch retry, the scheduler's publish retry).
    assert list(islice(backoff_delays(0.5, 10), 7)) == [0.5, 1, 2, 4, 8, 10, 10]
    assert list(islice(backoff_delays(1.0, 30), 7)) == [1, 2, 4, 8, 16, 30, 30]
    assert list(islice(backoff_delays(0.25, 2), 6)) == [0.25, 0.5, 1, 2, 2, 2]
    assert list(islice(backoff_delays(0.2, 10.0), 8)) == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10]
    assert list(islice(backoff_delays(0.5, 1.0), 2)) == [0.5, 1.0]


def test_backoff_delays_never_exceeds_the_cap() -> None:
    assert list(islice(backoff_delays(5, 3), 3)) == [3, 3, 3]


def test_backoff_delays_each_iterator_starts_over() -> None:
    first = backoff_delays(1, 8)
    assert [next(first), next(first), next(first)] == [1, 2, 4]
    assert next(backoff_delays(1, 8)) == 1
    assert next(first) == 8
