"""decode is strict JSON: NaN, Infinity and numbers beyond a double's range are refused,
in typed fields and in the ``Any`` rows of a RowBatch alike, naming the field."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from shared.messages import ListingResult, MessageDecodeError, RowBatch, decode, encode

MARKER = 0.987654321


def batch_bytes(literal: bytes) -> bytes:
    batch = RowBatch(
        job_id=uuid.UUID(int=1),
        account_id="42",
        listing_id="L1",
        table="chart_query",
        chunk_no=0,
        scrape_day=dt.date(2025, 7, 11),
        rows=[{"p": 1.5}, {"q": "NaN", "extra_metrics": {"m": {"value": MARKER}}}],
    )
    return encode(batch).replace(str(MARKER).encode(), literal)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1E+400"])
def test_a_non_finite_number_in_a_row_is_refused_naming_its_path(literal: bytes) -> None:
    with pytest.raises(MessageDecodeError) as info:
        decode(RowBatch, batch_bytes(literal))
    reason = str(info.value)
    assert reason.startswith("RowBatch: rows.1.extra_metrics.m.value: ")
    assert "not a finite number" in reason


def test_a_non_finite_number_in_a_typed_field_is_refused_naming_it() -> None:
    data = b'{"job_id": "%s", "account_id": "42", "listing_id": "L1", "status": "failed",' % (
        str(uuid.UUID(int=1)).encode()
    )
    with pytest.raises(MessageDecodeError, match=r"^ListingResult: rows: nan is not a finite"):
        decode(ListingResult, data + b' "rows": NaN}')


def test_finite_numbers_and_the_strings_nan_and_infinity_still_decode() -> None:
    for literal in (b"1e308", b"-1e-999", b'"NaN"', b'"Infinity"'):
        batch = decode(RowBatch, batch_bytes(literal))
        assert batch.rows[1]["extra_metrics"]["m"]["value"] in (1e308, -0.0, "NaN", "Infinity")


def test_bytes_that_are_not_json_say_so() -> None:
    with pytest.raises(MessageDecodeError, match=r"^RowBatch: <root>: Invalid JSON: "):
        decode(RowBatch, b'{"rows": [')
