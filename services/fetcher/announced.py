"""The listings a job announced, as the fetcher keeps them in the ``airbnb_fetch_progress``
KV bucket (``topology.fetch_listings_key``): a redelivered sync works on the same set.

Pure: the set itself and its KV value, written by ``shared.messages.to_json``, the one
JSON writer of anything that goes to NATS. The value is a JSON array of
``{listing_id, internal_name, listing_name}``; when Airbnb reported more listings than
it returned (``services.fetcher.pipeline.listings_reported``) it is an object
``{"listings": [...], "listings_reported": M}`` instead, so the redelivery announces the
shortfall again. The plain array stays the common form: a fetcher of the version before
reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from shared.airbnb.flatteners import Listing
from shared.messages import to_json


class Announced(NamedTuple):
    listings: list[Listing]
    # Airbnb's count of the host's listings when it returned fewer; None: it returned all
    listings_reported: int | None = None


def unique_listings(listings: Iterable[Listing]) -> list[Listing]:
    """First occurrence of each listing id, in Airbnb's order."""
    seen: dict[str, Listing] = {}
    for listing in listings:
        seen.setdefault(listing.listing_id, listing)
    return list(seen.values())


def encode_listings(listings: Sequence[Listing], listings_reported: int | None = None) -> bytes:
    if listings_reported is None:
        return to_json(listings)  # a dataclass: its three fields, in order
    return to_json({"listings": listings, "listings_reported": listings_reported})


def decode_listings(data: bytes) -> Announced:
    value: Any = orjson.loads(data)
    reported = None
    if type(value) is dict:
        reported = value.get("listings_reported")
        value = value["listings"]
    listings = [
        Listing(str(x["listing_id"]), x.get("internal_name"), x.get("listing_name")) for x in value
    ]
    return Announced(listings, reported)
