"""``sync-airbnb keys``: create, list and revoke the admin's API keys (airbnb.api_keys).

- ``keys create --name N --scope admin|read|customer:ID`` makes a key of 32 random bytes
  and prints it once, alone on stdout (so ``KEY=$(sync-airbnb keys create ...)`` takes
  it); only its sha256 is stored, so it cannot be shown again. Nothing of it is logged.
- ``keys list`` prints each key's name, scope, customer, created, revoked and last used
  (never a hash); ``--json`` prints one JSON object a line instead of the table.
- ``keys revoke NAME`` revokes the key in force with that name: the admin refuses it
  (401) from its next request on, as it looks every key up per request.

Each create and revoke is recorded in the audit trail, in the same transaction, with the
actor ``cli``. ``ADMIN_API_KEYS`` (the bootstrap admin keys, in the environment) are not
listed here: they are not in the database.

Errors are one line on stderr: exit 2 for a bad argument or setting, 1 for a refusal (a
name in force already, no such key) or PostgreSQL out of reach.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from collections.abc import Sequence

import asyncpg
import orjson

from services.admin import store
from services.admin.auth import Caller
from services.admin.scopes import ScopeError, check_name, key_hash, new_key, parse_scope
from shared.settings import DatabaseSettings, load_settings

EXIT_REFUSED = 1
EXIT_USAGE = 2

COLUMNS = ("name", "scope", "customer_id", "created_at", "revoked_at", "last_used_at")


class KeysSettings(DatabaseSettings):
    pass


class Refused(Exception):
    """What the command refuses to do, as the one line it prints."""


def _cli_caller() -> Caller:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container's)
        user = "unknown"
    return Caller("cli", "admin", None, f"local:{user}")


async def create(dsn: str, name: str, scope_text: str) -> tuple[str, asyncpg.Record]:
    spec = parse_scope(scope_text)
    check_name(name)
    key = new_key()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            digest = key_hash(key)
            row = await store.insert_api_key(conn, name, spec.scope, spec.customer_id, digest)
            if row is None:
                raise Refused(f"a key named {name!r} is in force already; revoke it first")
            await store.record(
                conn,
                _cli_caller(),
                "key_created",
                key_name=name,
                detail={"scope": spec.scope, "customer_id": spec.customer_id},
            )
    finally:
        await conn.close()
    return key, row


async def revoke(dsn: str, name: str) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            row = await store.revoke_api_key(conn, name)
            if row is None:
                raise Refused(f"no key named {name!r} is in force")
            await store.record(
                conn,
                _cli_caller(),
                "key_revoked",
                key_name=name,
                detail={"scope": row["scope"], "customer_id": row["customer_id"]},
            )
    finally:
        await conn.close()
    return row


async def list_keys(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await store.api_keys(conn)
    finally:
        await conn.close()


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(v)


def table(rows: Sequence[asyncpg.Record]) -> str:
    """The keys as aligned columns, a header first."""
    cells = [list(COLUMNS), *([_cell(r[c]) for c in COLUMNS] for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in cells
    )


def _json_line(r: asyncpg.Record) -> str:
    return orjson.dumps({c: r[c] for c in COLUMNS}).decode() + "\n"


def main(args: argparse.Namespace) -> int:
    settings = load_settings(KeysSettings, "keys")
    try:
        if args.keys_command == "create":
            try:
                parse_scope(args.scope)
                check_name(args.name)
            except ScopeError as exc:
                print(f"sync-airbnb keys create: {exc}", file=sys.stderr)
                return EXIT_USAGE
            key, row = asyncio.run(create(settings.database_url, args.name, args.scope))
            # The key alone on stdout, the rest on stderr: `$(sync-airbnb keys create ...)`.
            sys.stdout.write(key + "\n")
            scope = row["scope"] + (f":{row['customer_id']}" if row["customer_id"] else "")
            print(
                f"key {row['name']!r} created with scope {scope}; it is shown only this once",
                file=sys.stderr,
            )
        elif args.keys_command == "list":
            rows = asyncio.run(list_keys(settings.database_url))
            sys.stdout.write("".join(map(_json_line, rows)) if args.json else table(rows))
        else:
            row = asyncio.run(revoke(settings.database_url, args.name))
            print(f"key {row['name']!r} revoked", file=sys.stderr)
    except Refused as exc:
        print(f"sync-airbnb keys {args.keys_command}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # One line whatever the driver's message holds (it never holds a key: only a key's
        # hash is ever sent).
        reason = " ".join(str(exc).split())
        print(
            f"sync-airbnb keys {args.keys_command}: PostgreSQL could not be reached or refused"
            f" ({type(exc).__name__}: {reason})",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    return 0
