"""shared/backoff.py: the one retry curve, the iterator of waits built on it, and the one
retry loop (``retry_until``)."""

from __future__ import annotations

import asyncio
from itertools import islice

import pytest

from shared.backoff import RetryStopped, backoff_delays, capped_backoff, retry_until


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


# --- retry_until ----------------------------------------------------------------------------


class Flaky:
    """Fails ``failures`` times, then returns ``"done"``; counts its calls."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("down")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


async def test_retry_until_returns_once_an_attempt_succeeds() -> None:
    flaky = Flaky(3)
    waits: list[float] = []
    got = await retry_until(
        flaky, base_s=0.001, cap_s=0.002, on_retry=lambda exc, d: waits.append(d)
    )
    assert got == "done" and flaky.calls == 4
    assert waits == [0.001, 0.002, 0.002]  # the one curve, capped


async def test_retry_until_raises_what_is_not_worth_retrying_at_once() -> None:
    flaky = Flaky(5, ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        await retry_until(
            flaky, base_s=0.001, cap_s=0.001, retry_if=lambda e: isinstance(e, ConnectionError)
        )
    assert flaky.calls == 1


async def test_retry_until_raises_the_last_failure_when_attempts_run_out() -> None:
    flaky = Flaky(5)
    with pytest.raises(ConnectionError):
        await retry_until(flaky, base_s=0.001, cap_s=0.001, attempts=3)
    assert flaky.calls == 3


async def test_retry_until_raises_before_a_wait_past_the_deadline() -> None:
    flaky = Flaky(100)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionError):
        await retry_until(flaky, base_s=0.02, cap_s=0.02, deadline_s=0.1)
    elapsed = asyncio.get_running_loop().time() - started
    assert 2 <= flaky.calls <= 6 and elapsed < 1


async def test_retry_until_stops_in_a_wait_and_awaits_an_async_report() -> None:
    stop = asyncio.Event()
    reported: list[str] = []

    async def report(exc: BaseException, delay: float) -> None:
        reported.append(str(exc))
        asyncio.get_running_loop().call_later(0.05, stop.set)

    with pytest.raises(RetryStopped):
        await retry_until(Flaky(100), base_s=30, cap_s=30, stop=stop, on_retry=report)
    assert reported == ["down"]  # stopped in the 30 s wait, long before it ended


async def test_retry_until_cuts_an_attempt_short_only_when_asked() -> None:
    stop = asyncio.Event()
    finished: list[bool] = []

    async def slow() -> str:
        await asyncio.sleep(0.2)
        finished.append(True)
        return "late"

    asyncio.get_running_loop().call_later(0.02, stop.set)
    with pytest.raises(RetryStopped):
        await retry_until(slow, base_s=1, cap_s=1, stop=stop, interrupt_attempt=True)
    assert finished == []

    stop.clear()
    asyncio.get_running_loop().call_later(0.02, stop.set)
    assert await retry_until(slow, base_s=1, cap_s=1, stop=stop) == "late"  # let finish
    assert finished == [True]


async def test_retry_until_bounds_one_attempt() -> None:
    calls = 0

    async def hangs_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "second"

    got = await retry_until(hangs_once, base_s=0.001, cap_s=0.001, attempt_timeout_s=0.05)
    assert got == "second" and calls == 2
