"""Capped exponential backoff, the one curve every retry in the project follows.

``capped_backoff`` is the curve itself, for a retry that counts its attempts (a
redelivery count, a restart count); ``backoff_delays`` walks the same curve for a
loop that just waits a little longer after each failure in a row. No other module
doubles a delay of its own.
"""

from __future__ import annotations

from collections.abc import Iterator


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
