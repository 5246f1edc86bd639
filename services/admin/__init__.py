"""The admin service: the operator's HTTP API (``sync-airbnb admin``).

Routes (all under ``/api/v1`` need ``X-API-Key`` but the OpenAPI document, which with
``/docs`` (Swagger UI) needs it only when ``ADMIN_DOCS_PUBLIC=false``; ``/metrics`` needs it
when ``ADMIN_METRICS_PUBLIC=false``; ``/health`` and ``/health/ready`` never do). Each
route's ``scope`` in the table says which keys it admits (``scopes``): admin keys
everything, read keys every GET, customer keys the accounts of their customer only:

====== =========================================== =======================================
POST   /api/v1/accounts                            create (201) or update (200)
GET    /api/v1/accounts                            list: limit, offset, active, deleted,
                                                   customer_id
GET    /api/v1/accounts/{account_id}               read (soft-deleted ones too)
PATCH  /api/v1/accounts/{account_id}               change some fields
DELETE /api/v1/accounts/{account_id}               soft delete (409 when already deleted)
POST   /api/v1/accounts/{account_id}/restore       restore (409 when not deleted)
POST   /api/v1/accounts/{account_id}/sync          202 + trigger_id: a durable trigger
GET    /api/v1/triggers/{trigger_id}               pending, its job, or the refusal
GET    /api/v1/accounts/{account_id}/syncs         jobs, newest first
GET    /api/v1/syncs/{job_id}                      one job with its listings
GET    /api/v1/accounts/{account_id}/metrics/export CSV or JSON, streamed
GET    /api/v1/accounts/{account_id}/listings      listings, last sync, last job status
GET    /api/v1/accounts/{account_id}/insights      one metric as a series: metric, from, to,
                                                   granularity, listing_id, as_of
GET    /api/v1/accounts/{account_id}/insights/forward  demand build-up of stay dates
GET    /api/v1/portfolio                           every listing: 7/28 days vs before, flags
POST   /api/v1/accounts/{account_id}/connect-tokens  a connect token for the account (201,
                                                   shown once); GET lists them (never the
                                                   token), DELETE .../{token_id} revokes
POST   /api/v1/connect-tokens                      a connect token for a new account of a
                                                   customer; DELETE .../{token_id} revokes
POST   /api/v1/connect                             the browser extension: Authorization:
                                                   Bearer <connect token>, no X-API-Key
GET    /connect                                    where a connect link leads (public)
GET    /api/v1/openapi.json, /docs                 the document, as JSON and Swagger UI
GET    /ui/                                        the dashboard (public; it asks for a key)
GET    /health, /health/ready, /metrics            served by shared.service_http
====== =========================================== =======================================

Modules: ``app`` (factory, cleanup contexts), ``routes`` (the one route table, which
also feeds the document), ``handlers`` (thin: parse, call, answer), ``models``
(pydantic bodies and queries: the contract), ``accounts`` / ``syncs`` / ``export``
/ ``insight_queries`` (the logic, as plain classes; ``insights``
the read API's arithmetic, pure), ``middlewares`` (errors as JSON, body size, CORS),
``auth`` (the Caller of each request and the one middleware that authenticates and checks
the route's scope), ``scopes`` (what each key scope may do, keys and their hash, the
bucket of failed authentications: pure), ``keys`` (``sync-airbnb keys``), ``openapi``
(document and /docs page), ``errors``, ``settings``, ``state`` (typed app keys),
``rotate_keys`` (``sync-airbnb rotate-keys``), ``connect`` /
``connect_handlers`` (connect tokens and ``POST /connect``: the rules, and their handlers).

Decisions worth knowing:

- Keys (``auth``, ``scopes``, ``keys``): ``ADMIN_API_KEYS`` are the bootstrap admin keys;
  the others live hashed (sha256 of 32 random bytes) in ``airbnb.api_keys``, looked up on
  every request (no cache: a revoked key is refused from the next request). 401 for no,
  an unknown or a revoked key; 403 ``insufficient_scope``; 429 with ``Retry-After`` once an
  address used up its failed authentications. A customer key's reach is a condition of
  the store's SQL: another customer's account is a 404 with a missing account's body.

- The cookie is a write-only field: encrypted (``CredentialCipher``, MultiFernet over
  ``SECRET_KEYS``) before any query, excluded from ``repr``/``model_dump``, never read
  back, never echoed by a 422 (errors carry field, message and type, not the input).
- ``airbnb_cookie`` is a Cookie header or a browser's ``[{name, value}]`` list; only
  the auth group is kept (``accounts.intake_cookie`` over shared/airbnb/cookies.py),
  and a cookie without ``_airbed_session_id``/``_aat``/``_user_attributes``, or whose
  ``_user_attributes`` is another host's, is a 422 on ``airbnb_cookie``. Each change
  of the stored cookie bumps ``credentials_version``, which lets a sync's rotated
  cookies (saved by the writer) lose to credentials given here in between.
- An account change is committed only after JetStream stored its event; if NATS is
  down the change is rolled back and the answer is 503 (no unannounced change).
- A soft-deleted account must be restored before it can be updated (409).
- Errors are ``{"error": code, "detail": text, "fields"?: [...]}``; 422 for any bad
  body or query (invalid JSON and a key given twice included), 415 for a body not sent
  as ``application/json``, 404 for a path id that cannot exist. What aiohttp's parser
  refuses before routing (501 for an unknown method) is JSON too:
  shared/http_protocol.py. Every GET route answers HEAD.
"""
