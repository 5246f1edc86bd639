"""A dead letter always fits max_payload: the payload inline when it fits, else a reference."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography.fernet import Fernet
from nats.aio.msg import Msg

from services.fetcher.settings import CHUNK_MAX_BYTES_CAP, FetcherSettings
from shared import topology
from shared.dead_letters import (
    DEFAULT_MAX_PAYLOAD,
    MAX_REASON_CHARS,
    dead_letter_for,
    fit_payload,
    inline_limit,
)
from shared.messages import DeadLetter, DeadLetterPayloadRef, decode, encode
from shared.settings import load_settings

REF = DeadLetterPayloadRef(bucket="airbnb_dead_letter_payloads", name="deadletter:writer:S:9")
LETTER = DeadLetter(
    service="writer",
    subject=topology.SYNC_EVENTS,
    stream_sequence=9,
    deliveries=10,
    reason="x",
    at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
)


def message(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    # A core message (no reply subject): no JetStream metadata, no client needed.
    return Msg(_client=None, subject=topology.SYNC_EVENTS, data=data, headers=headers)  # type: ignore[arg-type]


def test_a_small_payload_travels_inline_with_its_size_and_digest() -> None:
    letter = fit_payload(LETTER, b"{}", inline_limit(DEFAULT_MAX_PAYLOAD), REF)
    assert letter.payload == "e30="
    assert letter.payload_ref is None
    assert letter.payload_size == 2
    assert letter.payload_sha256 == hashlib.sha256(b"{}").hexdigest()


def test_a_payload_that_would_not_fit_is_a_reference_and_the_letter_fits() -> None:
    data = b"\xff" * 900_000
    limit = inline_limit(DEFAULT_MAX_PAYLOAD)
    letter = fit_payload(LETTER, data, limit, REF)
    assert letter.payload is None
    assert letter.payload_ref == REF
    assert letter.payload_size == 900_000
    assert letter.payload_sha256 == hashlib.sha256(data).hexdigest()
    assert len(encode(letter)) < 2_000


@pytest.mark.parametrize("limit", [1_000, 10_000, inline_limit(DEFAULT_MAX_PAYLOAD)])
def test_the_boundary_is_the_encoded_letter_against_the_limit(limit: int) -> None:
    def inlined(n: int) -> bool:
        return fit_payload(LETTER, b"a" * n, limit, REF).payload is not None

    low, high = 0, limit  # inlined(low), not inlined(high)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if inlined(mid) else (low, mid)
    assert len(encode(fit_payload(LETTER, b"a" * low, limit, REF))) <= limit
    # One byte more would have made the letter longer than the limit had it been inlined.
    over = fit_payload(LETTER, b"a" * high, limit, REF)
    assert over.payload is None and over.payload_ref == REF
    as_inline = over.model_copy(
        update={"payload": base64.b64encode(b"a" * high).decode(), "payload_ref": None}
    )
    assert len(encode(as_inline)) > limit
    assert len(encode(over)) <= limit


def test_inline_leaves_room_for_the_dead_letters_own_headers() -> None:
    assert 0 < inline_limit(DEFAULT_MAX_PAYLOAD) < DEFAULT_MAX_PAYLOAD
    assert inline_limit(100) == 0


def test_a_chunk_at_the_settings_cap_is_dead_lettered_inline() -> None:
    # FETCHER_CHUNK_MAX_BYTES at its cap, with the longest reason in 4-byte characters.
    chunk = b"\x7f" * CHUNK_MAX_BYTES_CAP
    letter = dead_letter_for("writer", message(chunk), "\U0001f600" * (MAX_REASON_CHARS + 5))
    assert letter.payload is not None
    assert base64.b64decode(letter.payload) == chunk
    assert len(encode(letter)) <= inline_limit(DEFAULT_MAX_PAYLOAD)


def test_huge_headers_are_clipped_so_the_letter_without_payload_always_fits() -> None:
    headers = {f"h{i}-" + "k" * 5_000: "v" * 50_000 for i in range(100)}
    letter = dead_letter_for("writer", message(b"z" * 1_000_000, headers), "r" * 10_000)
    assert letter.payload_ref is not None and letter.payload_ref.stream is None
    assert letter.payload_ref.name.startswith("deadletter:writer:")
    assert len(encode(letter)) < 100_000


def test_a_smaller_server_limit_sends_a_chunk_by_reference() -> None:
    letter = dead_letter_for("writer", message(b"q" * 200_000), "x", max_payload=256 * 1024)
    assert letter.payload is None and letter.payload_ref is not None
    assert len(encode(letter)) <= inline_limit(256 * 1024)


def test_a_dead_letter_of_before_still_decodes() -> None:
    old = (
        b'{"service":"writer","subject":"airbnb.sync.events","stream_sequence":9,'
        b'"deliveries":10,"reason":"x","headers":{},"payload":"e30=",'
        b'"at":"2026-12-01T00:00:00Z"}'
    )
    letter = decode(DeadLetter, old)
    assert letter.payload == "e30=" and letter.payload_ref is None and letter.payload_size is None


@pytest.mark.parametrize("value", [CHUNK_MAX_BYTES_CAP + 1, 64 * 1024 * 1024])
def test_a_chunk_size_above_the_cap_is_a_start_up_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: int
) -> None:
    monkeypatch.setenv("NATS_URL", "nats://127.0.0.1:4222")
    monkeypatch.setenv("SECRET_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("FETCHER_CHUNK_MAX_BYTES", str(CHUNK_MAX_BYTES_CAP))
    assert load_settings(FetcherSettings, "fetcher").fetcher_chunk_max_bytes == CHUNK_MAX_BYTES_CAP
    monkeypatch.setenv("FETCHER_CHUNK_MAX_BYTES", str(value))
    with pytest.raises(SystemExit) as exit_info:
        load_settings(FetcherSettings, "fetcher")
    assert exit_info.value.code == 2
    assert "FETCHER_CHUNK_MAX_BYTES must be at most 737280" in capsys.readouterr().err
