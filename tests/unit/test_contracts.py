"""Message codec, credential cipher and JSON logs: pure unit tests."""

from __future__ import annotations

import datetime as dt
import io
import logging
import uuid

import orjson
import pytest
from cryptography.fernet import Fernet

from shared.crypto import CredentialCipher, CredentialsError
from shared.logs import JsonFormatter, log_context
from shared.messages import (
    EncryptedCredentials,
    MessageDecodeError,
    RowBatch,
    SyncRequest,
    SyncTriggerReply,
    decode,
    encode,
)


def _request() -> SyncRequest:
    return SyncRequest(
        job_id=uuid.uuid4(),
        account_id="123",
        kind="full",
        trigger="manual",
        scrape_day=dt.date(2025, 7, 11),
        window_start=dt.date(2025, 1, 5),
        window_end=dt.date(2025, 8, 9),
        credentials=EncryptedCredentials(cookie_token="tok", x_client_version="v", user_agent="ua"),
        requested_at=dt.datetime(2025, 7, 11, 5, tzinfo=dt.UTC),
    )


def test_codec_round_trips_every_field() -> None:
    req = _request()
    data = encode(req)
    assert isinstance(data, bytes)
    assert orjson.loads(data)["scrape_day"] == "2025-07-11"
    assert decode(SyncRequest, data) == req


def test_decode_names_the_bad_fields() -> None:
    bad = orjson.loads(encode(_request()))
    bad["kind"] = "weekly"
    del bad["account_id"]
    with pytest.raises(MessageDecodeError) as err:
        decode(SyncRequest, orjson.dumps(bad))
    assert "kind" in str(err.value) and "account_id" in str(err.value)
    with pytest.raises(MessageDecodeError):
        decode(SyncTriggerReply, b"{not json")


def test_unknown_fields_are_rejected_not_dropped() -> None:
    data = orjson.loads(encode(SyncTriggerReply(job_id=uuid.uuid4())))
    data["surprise"] = 1
    with pytest.raises(MessageDecodeError, match="surprise"):
        decode(SyncTriggerReply, orjson.dumps(data))


def test_row_batch_rejects_unknown_table() -> None:
    with pytest.raises(MessageDecodeError, match="table"):
        decode(
            RowBatch,
            orjson.dumps(
                {
                    "job_id": str(uuid.uuid4()),
                    "account_id": "1",
                    "listing_id": "2",
                    "table": "users",
                    "chunk_no": 0,
                    "scrape_day": "2025-07-11",
                    "rows": [],
                }
            ),
        )


def test_cipher_rotates_keys_and_hides_secrets() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = CredentialCipher([old]).encrypt("_user_attributes=secret")
    assert "secret" not in token
    rotated_cipher = CredentialCipher([new, old])
    assert rotated_cipher.decrypt(token) == "_user_attributes=secret"
    rotated = rotated_cipher.rotate(token)
    assert CredentialCipher([new]).decrypt(rotated) == "_user_attributes=secret"
    with pytest.raises(CredentialsError) as err:
        CredentialCipher([new]).decrypt(token)
    assert "secret" not in str(err.value)
    assert old not in repr(rotated_cipher)


def test_json_logs_carry_context_fields() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.jsonlogs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("writer"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(job_id="j-1", account_id="42"):
            logger.info("job %s", "succeeded", extra={"rows": 7})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "job succeeded"
    assert first["service"] == "writer" and first["level"] == "info"
    assert (first["job_id"], first["account_id"], first["rows"]) == ("j-1", "42", 7)
    assert "job_id" not in second
