"""Capped exponential backoff, the one curve every retry in the project follows, and
the one loop that retries along it.

``capped_backoff`` is the curve itself, for a retry that counts its attempts (a
redelivery count, a restart count); ``backoff_delays`` walks the same curve for a
loop that just waits a little longer after each failure in a row; ``retry_until``
is that loop: an awaitable tried until it succeeds, a stop is asked for, the
attempts or the time run out, or it fails in a way that is not worth retrying.
No other module doubles a delay or writes a retry loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def capped_backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """``min(cap, base * 2**(attempt-1))`` for ``attempt`` counted from 1 (0 counts as 1)."""
    return min(cap_s, base_s * 2 ** min(max(attempt, 1) - 1, 62))


def backoff_delays(base_s: float, cap_s: float) -> Iterator[float]:
    """The waits after the 1st, 2nd, 3rd... failure in a row: ``base_s``, doubling, at most
    ``cap_s``; endless. Take one per failure; a loop that starts over takes a new iterator."""
    attempt = 1
    while True:
        yield capped_backoff(attempt, base_s, cap_s)
        attempt += 1


class RetryStopped(Exception):
    """``retry_until``'s stop event was set before an attempt succeeded."""


def _any_exception(_: BaseException) -> bool:
    return True


async def retry_until(
    attempt: Callable[[], Awaitable[T]],
    *,
    base_s: float,
    cap_s: float,
    retry_if: Callable[[BaseException], bool] = _any_exception,
    stop: asyncio.Event | None = None,
    interrupt_attempt: bool = False,
    attempt_timeout_s: float | None = None,
    attempts: int | None = None,
    deadline_s: float | None = None,
    on_retry: Callable[[BaseException, float], object] | None = None,
) -> T:
    """``await attempt()`` until it returns, waiting ``backoff_delays(base_s, cap_s)``
    between failures; its result is returned.

    - An ``Exception`` for which ``retry_if`` is false is raised at once.
    - The last failure is raised when ``attempts`` tries are used up, or when the next
      wait would end past ``deadline_s`` seconds from the start.
    - ``stop`` set: :class:`RetryStopped` instead of a wait (the wait is cut short). With
      ``interrupt_attempt`` an attempt in progress is cancelled too; without, it is let
      finish (a database transaction is not cut in half).
    - ``attempt_timeout_s`` bounds one attempt: its ``TimeoutError`` is a failure like any.
    - ``on_retry(error, delay)`` runs before each wait (to log it); it may be async.
    """
    waits = backoff_delays(base_s, cap_s)
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            return await _one_attempt(
                attempt, stop if interrupt_attempt else None, attempt_timeout_s
            )
        except RetryStopped:
            raise
        except Exception as exc:
            if not retry_if(exc):
                raise
            delay = next(waits)
            if attempts is not None and tries >= attempts:
                raise
            if deadline_s is not None and time.monotonic() + delay - started > deadline_s:
                raise
            if stop is not None and stop.is_set():
                raise RetryStopped("stopped while retrying") from exc
            if on_retry is not None:
                reported = on_retry(exc, delay)
                if inspect.isawaitable(reported):
                    await reported
        if stop is None:
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            raise RetryStopped("stopped while retrying")


async def _one_attempt(
    attempt: Callable[[], Awaitable[T]], stop: asyncio.Event | None, timeout_s: float | None
) -> T:
    if stop is None:
        if timeout_s is None:
            return await attempt()
        return await asyncio.wait_for(attempt(), timeout=timeout_s)
    if stop.is_set():
        raise RetryStopped("stopped before an attempt")
    task = asyncio.ensure_future(asyncio.wait_for(attempt(), timeout=timeout_s))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled from outside: the attempt goes too
        task.cancel()
        raise
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise RetryStopped("stopped during an attempt")
    return task.result()
