"""The admin's one JSON body parser (services/admin/handlers.decode_json) alone."""

from __future__ import annotations

import pytest

from services.admin.errors import ApiError
from services.admin.handlers import decode_json


def refusal(raw: bytes) -> list[tuple[str, str]]:
    with pytest.raises(ApiError) as caught:
        decode_json(raw)
    assert caught.value.status == 422 and caught.value.fields is not None
    return [(f.field, f.type) for f in caught.value.fields]


def test_json_without_duplicates_is_parsed_as_json() -> None:
    assert decode_json(b'{"a": [1, {"b": null}], "c": "\\u00e9"}') == {
        "a": [1, {"b": None}],
        "c": "é",
    }


def test_each_duplicated_key_is_named_by_its_path_in_document_order() -> None:
    raw = (
        b'{"z": 1, "l": [{"k": 1}, {"k": 1, "k": 2, "k": 3}], "o": {"p": {"q": 1, "q": 2}}, "z": 2}'
    )
    assert refusal(raw) == [
        ("z", "duplicate_key"),
        ("l.1.k", "duplicate_key"),
        ("o.p.q", "duplicate_key"),
    ]


def test_an_object_the_duplicate_replaced_is_not_confused_with_a_later_one() -> None:
    # The first "a" (itself holding a duplicate) is dropped by the second: only "a" is named,
    # however the ids of the objects built after it are allotted.
    raw = b'{"a": {"x": 1, "x": 2}, "a": 3, "b": [' + b'{"y": 1},' * 50 + b'{"y": 2}]}'
    assert refusal(raw) == [("a", "duplicate_key")]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": 1',
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",  # a BOM: RFC 8259 8.1 says a sender must not add one
        b"[" * 100_000,
        b'{"a": ' + b"1" * 5000 + b"}",
        b"",
    ],
)
def test_what_is_not_json_is_refused_as_the_body(raw: bytes) -> None:
    assert refusal(raw) == [("body", "json_invalid")]
