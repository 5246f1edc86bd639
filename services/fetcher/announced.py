"""The listings a job announced, as the fetcher keeps them in the ``airbnb_fetch_progress``
KV bucket (``topology.fetch_listings_key``): a redelivered sync works on the same set.

Pure: the set itself and its KV value, a JSON array of ``{listing_id, internal_name,
listing_name}`` written by ``shared.messages.to_json``, the one JSON writer of anything
that goes to NATS.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from shared.airbnb.flatteners import Listing
from shared.messages import to_json


def unique_listings(listings: Iterable[Listing]) -> list[Listing]:
    """First occurrence of each listing id, in Airbnb's order."""
    seen: dict[str, Listing] = {}
    for listing in listings:
        seen.setdefault(listing.listing_id, listing)
    return list(seen.values())


def encode_listings(listings: Sequence[Listing]) -> bytes:
    return to_json(listings)  # a dataclass: its three fields, in order


def decode_listings(data: bytes) -> list[Listing]:
    return [
        Listing(str(x["listing_id"]), x.get("internal_name"), x.get("listing_name"))
        for x in orjson.loads(data)
    ]
