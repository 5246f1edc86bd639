"""Fault injection: what can go wrong, as JSON, and the seeded dice that decide when.

The configuration is one JSON object, the same in ``SIM_FAULTS`` (read at start)
and on ``/_sim/faults`` (``GET`` shows it, ``PUT`` replaces it, ``POST`` merges the
given keys into it, ``DELETE`` clears every fault)::

    {
      "expired_sessions": {"<account_id>": "http_401"},  # or http_403,
                              # authentication_required, null_components, login_page
      "rate_limit_rate": 0.1,        # share of requests answered 429
      "retry_after_s": 1,            # Retry-After of those 429s; null sends none
      "server_error_rate": 0.2,      # share answered with a 5xx HTML page
      "server_error_status": 503,
      "malformed_json_rate": 0.0,    # share answered 200 with a body cut in half
      "malformed_listings": ["<listing_id>"],  # valid JSON, data the flatteners reject
      "listings_page_size": null,    # ListingsSectionQuery returns at most this many
                                     # listings, totalCount still all; null: all
      "latency_ms": {"mean": 0, "jitter": 0},  # uniform in mean +- jitter, never < 0
      "seed": null                   # seed of the dice; null: the simulator's --seed
    }

Every request to the GraphQL endpoint of a known account rolls the same four
dice in the same order, whatever the configuration, so a given seed and request
sequence always meet the same faults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AuthForm(StrEnum):
    """The four ways Airbnb says a session has expired (captures README)."""

    HTTP_401 = "http_401"
    HTTP_403 = "http_403"
    AUTHENTICATION_REQUIRED = "authentication_required"
    NULL_COMPONENTS = "null_components"
    LOGIN_PAGE = "login_page"


class Latency(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.0, ge=0)


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expired_sessions: dict[str, AuthForm] = Field(default_factory=dict)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float | None = Field(default=1.0, ge=0)
    server_error_rate: float = Field(default=0.0, ge=0, le=1)
    server_error_status: int = Field(default=503, ge=500, le=599)
    malformed_json_rate: float = Field(default=0.0, ge=0, le=1)
    malformed_listings: frozenset[str] = Field(default_factory=frozenset)
    # Airbnb cutting the listings table short: the first N rows in the active sort, with
    # totalCount the host's count and resultsCount N. No request can ask for the rest.
    listings_page_size: int | None = Field(default=None, ge=0)
    latency_ms: Latency = Field(default_factory=Latency)
    seed: int | None = None

    def merged(self, patch: dict[str, Any]) -> FaultConfig:
        """This configuration with the keys of ``patch`` replaced (validated)."""
        return FaultConfig.model_validate({**self.model_dump(mode="json"), **patch})


Outcome = Literal["ok", "expired", "rate_limited", "server_error", "malformed_json"]


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    latency_s: float = 0.0
    auth_form: AuthForm | None = None


def decide(config: FaultConfig, rng: random.Random, account_id: str) -> Decision:
    """The fate of one request of ``account_id``; draws exactly four numbers from ``rng``."""
    latency_roll, limit_roll, error_roll, malformed_roll = (rng.random() for _ in range(4))
    lat = config.latency_ms
    latency_s = max(0.0, lat.mean + (2 * latency_roll - 1) * lat.jitter) / 1000
    form = config.expired_sessions.get(account_id)
    if form is not None:
        return Decision("expired", latency_s, form)
    if limit_roll < config.rate_limit_rate:
        return Decision("rate_limited", latency_s)
    if error_roll < config.server_error_rate:
        return Decision("server_error", latency_s)
    if malformed_roll < config.malformed_json_rate:
        return Decision("malformed_json", latency_s)
    return Decision("ok", latency_s)


class FaultState:
    """The live configuration and its dice; the only mutable fault state of the simulator."""

    def __init__(self, config: FaultConfig, default_seed: int) -> None:
        self._default_seed = default_seed
        self.config = config
        self._rng = self._new_rng(config)

    def _new_rng(self, config: FaultConfig) -> random.Random:
        seed = config.seed if config.seed is not None else self._default_seed
        return random.Random(f"sync-airbnb-sim:faults:{seed}")

    def replace(self, config: FaultConfig) -> None:
        # A new configuration restarts the dice, so a test that sets faults sees the
        # same sequence whatever ran before it.
        self.config = config
        self._rng = self._new_rng(config)

    def reset(self) -> None:
        self.replace(FaultConfig())

    def next_decision(self, account_id: str) -> Decision:
        return decide(self.config, self._rng, account_id)
