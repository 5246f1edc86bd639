"""The pure rules of scoped keys (services/admin/scopes.py): which key a route admits, the
key format and its hash, --scope parsing, a customer key's own customer, and the bucket of
failed authentications."""

from __future__ import annotations

import hashlib

import pytest

from services.admin.errors import ApiError
from services.admin.scopes import (
    ADMITS,
    KEY_PATTERN,
    ROUTE_SCOPES,
    SCOPE_SENTENCES,
    FailureBuckets,
    KeySpec,
    ScopeError,
    admits,
    admitted,
    bootstrap_name,
    check_name,
    key_hash,
    looks_like_key,
    new_key,
    own_customer,
    parse_scope,
)


@pytest.mark.parametrize(
    ("route", "allowed"),
    [
        ("public", {"admin", "read", "customer", "connect"}),
        ("read", {"admin", "read", "customer"}),
        ("write", {"admin", "customer"}),
        ("admin", {"admin"}),
        ("operator", {"admin", "read"}),
        ("connect", {"connect"}),
    ],
)
def test_what_each_route_scope_admits(route: str, allowed: set[str]) -> None:
    for key in ("admin", "read", "customer", "connect"):
        assert admits(route, key) is (key in allowed), (route, key)  # type: ignore[arg-type]
    assert set(admitted(route)) == allowed  # type: ignore[arg-type]


def test_a_read_key_writes_nothing_and_a_customer_key_reads_no_operations_data() -> None:
    assert not admits("write", "read")
    assert not admits("admin", "read") and not admits("admin", "customer")
    assert not admits("operator", "customer")
    # a path no route serves: any valid key learns it is a 404/405
    assert all(admits(None, k) for k in ("admin", "read", "customer", "connect"))


def test_every_route_scope_is_described() -> None:
    assert set(ADMITS) == set(ROUTE_SCOPES) == set(SCOPE_SENTENCES)
    assert admitted("write") == ["admin", "customer"]  # a fixed order for the document


def test_keys_are_32_random_bytes_and_stored_as_their_sha256() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert KEY_PATTERN.match(key) and looks_like_key(key)
        assert len(key) == 4 + 43  # sak_ + base64url of 32 bytes without padding
        assert key_hash(key) == hashlib.sha256(key.encode()).hexdigest() != key
    assert not looks_like_key("test-key-1") and not looks_like_key(new_key() + "x")
    # a header that is not UTF-8 (surrogate-escaped by the server) hashes, no crash
    assert len(key_hash("cl\udce9")) == 64


def test_bootstrap_keys_are_named_by_their_place() -> None:
    assert [bootstrap_name(i) for i in range(3)] == ["bootstrap:1", "bootstrap:2", "bootstrap:3"]


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("admin", KeySpec("admin", None)),
        ("read", KeySpec("read", None)),
        ("customer:acme", KeySpec("customer", "acme")),
        ("customer:a:b c", KeySpec("customer", "a:b c")),
    ],
)
def test_parse_scope(text: str, spec: KeySpec) -> None:
    assert parse_scope(text) == spec


@pytest.mark.parametrize(
    "text", ["", "Admin", "owner", "customer", "customer:", "customer: x", "customer:x ", "read:x"]
)
def test_parse_scope_refuses(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_names() -> None:
    assert check_name("ops.grafana-1@acme") == "ops.grafana-1@acme"
    for bad in ("", "bootstrap:1", "connect-token:x", "-x", "a b", "x" * 101):
        with pytest.raises(ScopeError):
            check_name(bad)


def test_a_customer_key_writes_for_its_own_customer_only() -> None:
    # an admin key: what it gives
    assert own_customer(None, "any", required=False) == "any"
    assert own_customer(None, None, required=True) is None
    # a customer key: its own, given or (on a create) left out
    assert own_customer("acme", None, required=False) == "acme"
    assert own_customer("acme", "acme", required=True) == "acme"
    for given, required in (("other", False), ("other", True), (None, True)):
        with pytest.raises(ApiError) as err:
            own_customer("acme", given, required=required)
        assert err.value.status == 422
        assert [f.field for f in err.value.fields or []] == ["customer_id"]
        assert (err.value.fields or [])[0].type == "customer_mismatch"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_a_burst_then_one_failure_per_refill() -> None:
    clock = Clock()
    b = FailureBuckets(burst=3, per_minute=6, max_clients=10, clock=clock)  # one per 10 s
    assert b.retry_after("1.2.3.4") is None
    for _ in range(3):
        assert b.retry_after("1.2.3.4") is None
        b.failed("1.2.3.4")
    assert b.retry_after("1.2.3.4") == 10
    clock.now += 4
    assert b.retry_after("1.2.3.4") == 6
    clock.now += 6
    assert b.retry_after("1.2.3.4") is None  # one token back
    b.failed("1.2.3.4")
    assert b.retry_after("1.2.3.4") == 10
    # another address is its own bucket
    assert b.retry_after("5.6.7.8") is None
    # a long pause refills to the burst, never past it
    clock.now += 3600
    for _ in range(3):
        assert b.retry_after("1.2.3.4") is None
        b.failed("1.2.3.4")
    assert b.retry_after("1.2.3.4") == 10


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    clock = Clock()
    b = FailureBuckets(burst=1, per_minute=600, max_clients=10, clock=clock)  # one per 0.1 s
    b.failed("x")
    assert b.retry_after("x") == 1
    clock.now += 0.1
    assert b.retry_after("x") is None


def test_the_buckets_are_bounded_full_ones_dropped_first() -> None:
    clock = Clock()
    b = FailureBuckets(burst=2, per_minute=60, max_clients=3, clock=clock)
    b.failed("old")  # refills within a second
    clock.now += 0.5
    b.failed("a")
    b.failed("a")
    b.failed("b")
    b.failed("b")
    assert len(b) == 3
    clock.now += 1
    b.failed("c")  # "old" is full again: dropped; "a" and "b" are still short
    assert len(b) == 3 and b.retry_after("a") is None and b.retry_after("old") is None
    clock.now += 0.1
    b.failed("a")
    b.failed("d")  # none full: the oldest made goes
    assert len(b) == 3
