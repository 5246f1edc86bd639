"""Capped exponential backoff, the one curve every retry in the project follows."""

from __future__ import annotations


def capped_backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """``min(cap, base * 2**(attempt-1))`` for ``attempt`` counted from 1 (0 counts as 1)."""
    return min(cap_s, base_s * 2 ** min(max(attempt, 1) - 1, 62))
