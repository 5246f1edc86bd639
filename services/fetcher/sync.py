"""One account sync: Airbnb in, RowBatches / ListingResults / JobEvents out (docs/data-path.md).

:func:`run_sync` does the I/O around the pure pipeline of
:mod:`services.fetcher.pipeline`, one request at a time for the account (the client
paces them). What it returns or raises tells the caller what to do with the
request message:

* ``"completed"``: every listing has its KV key; ack.
* ``"auth_failed"``: ``JobEvent(auth_failed)`` is published; ack, never retry.
* :class:`PermanentSyncError`: the request itself is unusable (a window Airbnb does
  not serve, a cookie token no key in SECRET_KEYS decrypts); retrying cannot help.
* any other exception: a transient failure of the whole sync (ListingsSectionQuery
  keeps failing, NATS away); nak with backoff.

Every sync starts with the client's preflight (a page load of the dashboard, which
keeps the host's session alive the way a browser does; docs/sessions.md). A login
redirect there is an expired session, handled like any other: no GraphQL request
is sent. When the sync ends, in success or failure, and the auth cookies in the
client's jar differ from the stored ones (Airbnb rotated them), they are published
Fernet-encrypted as ``CredentialsRotated`` for the writer to save.

The cookie lives in this function's memory only: it goes into the client's
cookie jar and nowhere else, and no error text built here contains it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext
from nats.js.errors import KeyDeletedError, KeyNotFoundError
from nats.js.kv import KeyValue

from services.fetcher import pipeline
from services.fetcher.announced import (
    Announced,
    decode_listings,
    encode_listings,
    unique_listings,
)
from services.fetcher.settings import FetcherSettings
from shared import topology
from shared.airbnb import cookies
from shared.airbnb.client import AirbnbClient
from shared.airbnb.errors import AirbnbError, AuthError, RejectedRequestError
from shared.airbnb.flatteners import Listing, flatten_listings_page
from shared.airbnb.operations import LISTINGS_SECTION
from shared.airbnb.payloads import listings_section_payload, plan_listing_requests
from shared.airbnb.pivots import Row
from shared.airbnb.windows import DateRange, check_servable
from shared.crypto import CredentialCipher, CredentialsError
from shared.messages import (
    CredentialsRotated,
    EncryptedCredentials,
    JobEvent,
    ListingResult,
    RowBatch,
    SyncRequest,
    encode,
)
from shared.metric_tables import TableName
from shared.metrics import EXTRA_METRICS, LISTINGS_FETCHED, LISTINGS_TRUNCATED, ROWS_PUBLISHED

log = logging.getLogger("sync_airbnb.fetcher")

SyncOutcome = Literal["completed", "auth_failed"]
# JetStream usually acks a publish in milliseconds; this bounds a stuck server.
PUBLISH_TIMEOUT_S = 10.0
KV_PUBLISHED = b"published"
KV_FAILED = b"failed"


class PermanentSyncError(Exception):
    """The request can never succeed as it is; the message says why (no secrets)."""


# Only the keys can change this (a redelivery decrypts with the same SECRET_KEYS), so
# the job fails at once instead of after MAX_DELIVER deliveries, and the reason says
# what the operator does about it.
UNDECRYPTABLE_TOKEN = (
    "credentials token cannot be decrypted with any key in SECRET_KEYS: the key it was "
    "encrypted with is not configured on this fetcher (dropped too early in a key rotation, "
    "or the services disagree on SECRET_KEYS). Put that key back into SECRET_KEYS (after "
    "the current first key) on every service, run `sync-airbnb rotate-keys`, and drop the "
    "old key only once the queued sync requests are fetched (README: Rotating keys); or "
    "give the account its cookie again (PATCH /api/v1/accounts/{account_id}), then sync it"
)


class ListingsUnavailableError(Exception):
    """ListingsSectionQuery failed; the whole sync is retried later."""


# How many listings one fetcher turns into rows and publishes at once. Accounts paced
# alike finish their listings together (1,000 first runs end their first listing within
# a second or two), and each listing's rows and encoded chunks are ~300 KiB while it is
# published: unbounded, that was a third of the fetcher's peak RSS (bench_fleet, issue
# 17). A listing takes a few ms here, so a wait for a slot is far shorter than the pacing.
PUBLISH_SLOTS = 32


@dataclass(frozen=True, slots=True)
class SyncDeps:
    js: JetStreamContext
    kv: KeyValue
    cipher: CredentialCipher
    settings: FetcherSettings
    # The effective RowBatch limit: the setting, or less if the NATS server says so.
    chunk_max_bytes: int
    publish_slots: asyncio.Semaphore


def refused(exc: RejectedRequestError) -> str:
    """Why a sync fails for good when Airbnb refuses the preflight or the listings query.

    A 4xx other than an expired session or 429 answers the same request the same way on
    every delivery (a cookie too large for Airbnb's header limit is a 400 or 431), so
    the job fails at once with the status instead of after MAX_DELIVER deliveries.
    """
    return f"{exc}; the same request is refused every time, so the sync is not retried"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def publish(js: JetStreamContext, subject: str, data: bytes, msg_id: str) -> None:
    await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=PUBLISH_TIMEOUT_S)


async def publish_job_event(js: JetStreamContext, event: JobEvent) -> None:
    await publish(
        js,
        topology.SYNC_EVENTS,
        encode(event),
        topology.job_event_msg_id(event.job_id, event.event),
    )


async def kv_get(kv: KeyValue, key: str) -> bytes | None:
    try:
        entry = await kv.get(key)
    except (KeyNotFoundError, KeyDeletedError):  # never written, or deleted/purged since
        return None
    return entry.value


def request_window(req: SyncRequest) -> DateRange:
    """The request's window, checked before any request is sent; a bad one is permanent."""
    try:
        window = DateRange(req.window_start, req.window_end)
        check_servable(window, req.scrape_day)
    except ValueError as exc:  # WindowError is a ValueError too
        raise PermanentSyncError(f"unusable sync window: {exc}") from None
    return window


def new_client(deps: SyncDeps, req: SyncRequest, cookie: str) -> AirbnbClient:
    return airbnb_client(deps.settings, req.account_id, cookie, req.credentials)


def airbnb_client(
    s: FetcherSettings, account_id: str, cookie: str, credentials: EncryptedCredentials
) -> AirbnbClient:
    """The client of one sync or one credential check: a fresh session and cookie jar."""
    return AirbnbClient(
        cookie=cookie,
        x_client_version=credentials.x_client_version,
        user_agent=credentials.user_agent,
        base_url=s.airbnb_base_url,
        min_interval_s=s.airbnb_min_interval_s,
        pacing_jitter=s.airbnb_pacing_jitter,
        max_attempts=s.airbnb_max_attempts,
        timeout_s=s.airbnb_request_timeout_s,
        account_id=account_id,
        api_key=s.airbnb_api_key,
        ca_file=str(s.airbnb_ca_file) if s.airbnb_ca_file else None,
        accept_language=s.airbnb_accept_language,
        cookie_mode="replay" if s.airbnb_session_mode == "replay" else "jar",
    )


async def run_sync(deps: SyncDeps, req: SyncRequest) -> SyncOutcome:
    window = request_window(req)
    try:
        cookie = deps.cipher.decrypt(req.credentials.cookie_token)
    except CredentialsError:
        raise PermanentSyncError(UNDECRYPTABLE_TOKEN) from None
    stored = cookies.auth_only(cookies.parse_cookie_header(cookie))
    async with new_client(deps, req, cookies.format_cookie_header(stored)) as client:
        try:
            try:
                announced = await announced_listings(deps, req)
                # A redelivery (or a replay) with every listing already published asks
                # Airbnb nothing, so it loads no page either.
                if client.cookie_mode == "jar" and not await all_recorded(deps, req, announced):
                    try:
                        await client.preflight()
                    except RejectedRequestError as exc:
                        raise PermanentSyncError(refused(exc)) from None
                listings = await job_listings(deps, client, req, announced)
                for listing in listings:
                    await sync_listing(deps, client, req, window, listing)
            finally:
                # Success or failure alike: Airbnb may have rotated _aaj already, and the
                # old one stops working within a day or two. Not on cancellation (a stop):
                # the stored cookies are still valid for the redelivery.
                if not _cancelling():
                    await save_rotated_cookies(deps, req, stored, client.auth_cookies())
        except AuthError as exc:
            log.warning("Airbnb rejected the account's session; sync stopped: %s", exc)
            await publish_job_event(
                deps.js,
                JobEvent(
                    job_id=req.job_id,
                    account_id=req.account_id,
                    event="auth_failed",
                    reason=pipeline.clip_reason(str(exc)),
                    credentials_version=req.credentials.version,
                    at=now(),
                ),
            )
            return "auth_failed"
    log.info("sync finished: %d listings", len(listings), extra={"listings": len(listings)})
    return "completed"


async def announced_listings(deps: SyncDeps, req: SyncRequest) -> Announced | None:
    """The listings an earlier delivery of this job announced, or None (a first delivery)."""
    stored = await kv_get(deps.kv, topology.fetch_listings_key(req.job_id))
    return None if stored is None else decode_listings(stored)


async def all_recorded(deps: SyncDeps, req: SyncRequest, announced: Announced | None) -> bool:
    """True when an earlier delivery announced the listings and recorded every one."""
    if announced is None:
        return False
    for listing in announced.listings:
        key = topology.fetch_progress_key(req.job_id, listing.listing_id)
        if await kv_get(deps.kv, key) is None:
            return False
    return True


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def rotated_names(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """The auth cookies whose value Airbnb changed, added or removed (names only)."""
    return [n for n in cookies.AUTH_COOKIES if stored.get(n) != current.get(n)]


async def save_rotated_cookies(
    deps: SyncDeps, req: SyncRequest, stored: dict[str, str], current: dict[str, str]
) -> None:
    """Publish the jar's auth cookies when they differ from the stored ones."""
    changed = rotated_names(stored, current)
    if not changed or not current:
        return
    message = CredentialsRotated(
        job_id=req.job_id,
        account_id=req.account_id,
        from_version=req.credentials.version,
        cookie_token=deps.cipher.encrypt(cookies.format_cookie_header(current)),
        changed=changed,
        rotated_at=now(),
    )
    await publish(
        deps.js,
        topology.SYNC_CREDENTIALS,
        encode(message),
        topology.credentials_rotated_msg_id(req.job_id, req.credentials.version),
    )
    log.info(
        "Airbnb rotated the session's cookies; saved for the account",
        extra={"cookies": changed, "from_version": req.credentials.version},
    )


async def job_listings(
    deps: SyncDeps, client: AirbnbClient, req: SyncRequest, announced: Announced | None
) -> list[Listing]:
    """The job's listings, announced with ``JobEvent(started)``.

    The first delivery asks Airbnb and keeps the answer in the KV bucket before
    announcing it; a redelivery reuses that set (``announced``, read from the bucket by
    the caller), so the writer's ``listings_total`` and the listings fetched never
    disagree, even if the host changed listings since.

    When Airbnb reports more listings than it returned (``totalCount``), the event
    carries that count as ``listings_reported`` and the writer ends the job
    ``partial``, "N of M listings returned": the query cannot be paged
    (pipeline.listings_reported), and a silent subset would look like a full sync.
    """
    if announced is not None:
        listings, reported = announced
        log.info("resuming a redelivered sync of %d listings", len(listings))
    else:
        try:
            body = await client.post(LISTINGS_SECTION, listings_section_payload())
            page = flatten_listings_page(body)
        except AuthError:
            raise
        except RejectedRequestError as exc:
            raise PermanentSyncError(refused(exc)) from None
        except AirbnbError as exc:  # MalformedResponseError included
            raise ListingsUnavailableError(f"ListingsSectionQuery failed: {exc}") from None
        listings = unique_listings(page.listings)
        reported = pipeline.listings_reported(page)
        key = topology.fetch_listings_key(req.job_id)
        await deps.kv.put(key, encode_listings(listings, reported))
        if reported is not None:
            # Counted once per job: a redelivery reads the count back from the bucket.
            LISTINGS_TRUNCATED.inc()
            log.warning(
                "Airbnb returned %d of %d listings; the job will end partial",
                len(page.listings),
                reported,
                extra={
                    "total_count": page.total_count,
                    "results_count": page.results_count,
                    "returned": len(page.listings),
                },
            )
    # Published on every delivery: if a crash came between the KV put and this publish,
    # the redelivery sends it; otherwise JetStream drops the copy by its msg id.
    await publish_job_event(
        deps.js,
        JobEvent(
            job_id=req.job_id,
            account_id=req.account_id,
            event="started",
            listings_total=len(listings),
            listing_ids=[x.listing_id for x in listings],
            listings_reported=reported,
            at=now(),
        ),
    )
    return listings


async def sync_listing(
    deps: SyncDeps, client: AirbnbClient, req: SyncRequest, window: DateRange, listing: Listing
) -> None:
    """Fetch, publish and record one listing, unless a previous delivery already did.

    Raises AuthError (the whole sync stops) and NATS errors (the sync is retried);
    every other failure becomes a ``failed`` ListingResult and the sync goes on.
    """
    key = topology.fetch_progress_key(req.job_id, listing.listing_id)
    if await kv_get(deps.kv, key) is not None:
        LISTINGS_FETCHED.labels("skipped_already_published").inc()
        return
    try:
        answers = await fetch_listing(client, req, window, listing)
    except AuthError:
        raise
    except (AirbnbError, pipeline.ListingDataError) as exc:
        await record_failed_listing(deps, req, listing, str(exc))
        return
    async with deps.publish_slots:
        await publish_listing(deps, req, listing, answers, key)


async def publish_listing(
    deps: SyncDeps,
    req: SyncRequest,
    listing: Listing,
    answers: list[pipeline.Packed],
    progress_key: str,
) -> None:
    """Pivot one fetched listing, publish its chunks and its result, and record it
    under ``progress_key``."""
    try:
        tables = listing_tables(req, listing, answers)
        answers.clear()  # the rows hold what is needed of them
        batches = pipeline.row_batches(
            job_id=req.job_id,
            account_id=req.account_id,
            listing_id=listing.listing_id,
            scrape_day=req.scrape_day,
            tables=tables,
            max_bytes=deps.chunk_max_bytes,
        )
    except pipeline.ListingDataError as exc:
        await record_failed_listing(deps, req, listing, str(exc))
        return
    await publish_batches(deps.js, batches)
    result = pipeline.published_result(
        job_id=req.job_id,
        account_id=req.account_id,
        listing=listing,
        tables=tables,
        batches=batches,
    )
    await publish_result(deps.js, result)
    # Only now: a crash before this line re-fetches the listing, and the same msg ids
    # make JetStream drop what was already published.
    await deps.kv.put(progress_key, KV_PUBLISHED)
    LISTINGS_FETCHED.labels("published").inc()
    for table, n in result.rows.items():
        ROWS_PUBLISHED.labels(table).inc(n)
    log.info(
        "listing published",
        extra={"listing_id": listing.listing_id, "rows": result.rows, "chunks": result.chunks},
    )


async def fetch_listing(
    client: AirbnbClient, req: SyncRequest, window: DateRange, listing: Listing
) -> list[pipeline.Packed]:
    """Every request of the listing's poll plan, in order, each answer flattened on arrival
    (so a malformed one stops the listing at once) and packed until the pivot."""
    answers: list[pipeline.Packed] = []
    for planned in plan_listing_requests(listing.listing_id, window, req.scrape_day):
        try:
            body = await client.post(planned.query, planned.body)
        except AuthError:
            raise
        except AirbnbError as exc:
            raise pipeline.ListingDataError(f"{pipeline.describe(planned)}: {exc}") from None
        answers.append(pipeline.pack(pipeline.flatten_response(planned, body)))
    return answers


def listing_tables(
    req: SyncRequest, listing: Listing, answers: list[pipeline.Packed]
) -> dict[TableName, list[Row]]:
    """The listing's table rows; metrics without a column are counted and logged."""
    tables = pipeline.pivot_listing(
        (pipeline.unpack(a) for a in answers),
        account_id=req.account_id,
        listing=listing,
        scrape_day=req.scrape_day,
    )
    for table, names in pipeline.extra_metric_names(tables).items():
        EXTRA_METRICS.labels(table).inc(names.total())
        log.warning(
            "Airbnb returned metrics without a column; kept in extra_metrics",
            extra={"listing_id": listing.listing_id, "table": table, "metrics": dict(names)},
        )
    return tables


async def publish_batches(js: JetStreamContext, batches: list[RowBatch]) -> None:
    """Publish every chunk and wait for every ack (concurrently: the order does not matter)."""
    await asyncio.gather(
        *(
            publish(
                js,
                topology.rows_subject(b.table),
                encode(b),
                topology.row_batch_msg_id(b.job_id, b.listing_id, b.table, b.chunk_no),
            )
            for b in batches
        )
    )


async def publish_result(js: JetStreamContext, result: ListingResult) -> None:
    await publish(
        js,
        topology.SYNC_PROGRESS,
        encode(result),
        topology.listing_result_msg_id(result.job_id, result.listing_id),
    )


async def record_failed_listing(
    deps: SyncDeps, req: SyncRequest, listing: Listing, reason: str
) -> None:
    result = pipeline.failed_result(
        job_id=req.job_id, account_id=req.account_id, listing=listing, reason=reason
    )
    log.warning(
        "listing failed: %s",
        result.error,
        extra={"listing_id": listing.listing_id},
    )
    await publish_result(deps.js, result)
    await deps.kv.put(topology.fetch_progress_key(req.job_id, listing.listing_id), KV_FAILED)
    LISTINGS_FETCHED.labels("failed").inc()
