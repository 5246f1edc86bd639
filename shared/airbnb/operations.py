"""Airbnb's persisted GraphQL queries used by the performance dashboard.

Requests go to ``POST {base}/api/v3/{operation_name}/{sha256_hash}``; the hash
names a query stored on Airbnb's side, so a changed hash is a changed API.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PersistedQuery:
    operation_name: str
    sha256_hash: str
    client_name: str

    @property
    def path(self) -> str:
        return f"/api/v3/{self.operation_name}/{self.sha256_hash}"


LISTINGS_SECTION = PersistedQuery(
    "ListingsSectionQuery",
    "7a646c07b45ad35335b2cde4842e5c5bf69ccebde508b2ba60276832bfb1816b",
    "web-performance-dash-listings",
)
CHART = PersistedQuery(
    "ChartQuery",
    "aa6e318cc066bbf19511b86acdce32fc59219d8596448b861d794491f46631c5",
    "web-performance-dash-chart",
)
LIST_OF_METRICS = PersistedQuery(
    "ListOfMetricsQuery",
    "b22a5ded5e6c6d168f1d224b78f34182e7366e5cc65203ec04f1e718286a09e1",
    "web-performance-dash-metrics",
)

PERSISTED_QUERIES: dict[str, PersistedQuery] = {
    q.operation_name: q for q in (LISTINGS_SECTION, CHART, LIST_OF_METRICS)
}
