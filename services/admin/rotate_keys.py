"""``sync-airbnb rotate-keys``: re-encrypt every stored credential under the first key.

Rotation: put the new Fernet key first in SECRET_KEYS (keep the old ones after
it), restart the services, run this, then drop the old keys. It walks
``airbnb.accounts`` in account_id order, a batch per transaction with the rows
locked, so it runs safely beside the live services and can be run again (a
rotated token just rotates again). It prints one JSON line with the counts.

A token that no key decrypts is left as it is and counted; the exit code is
then 1 and the account ids are logged (never a token). Note that sync requests
already queued in JetStream carry tokens under the old key: keep the old key
until those have been fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import asyncpg
import orjson

from shared.crypto import CredentialCipher, CredentialsError
from shared.logs import setup_logging
from shared.settings import DatabaseSettings, SecretSettings, load_settings

log = logging.getLogger("sync_airbnb.rotate_keys")

BATCH = 500


class RotateKeysSettings(DatabaseSettings, SecretSettings):
    pass


async def rotate_all(dsn: str, cipher: CredentialCipher, *, batch: int = BATCH) -> dict[str, int]:
    """Re-encrypt every account's token under the cipher's first key; returns the counts."""
    rotated = failed = 0
    last = ""
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            async with conn.transaction():
                rows = await conn.fetch(
                    "SELECT account_id, credentials_encrypted FROM airbnb.accounts"
                    " WHERE account_id > $1 ORDER BY account_id LIMIT $2 FOR UPDATE",
                    last,
                    batch,
                )
                if not rows:
                    break
                updates: list[tuple[str, str]] = []
                for row in rows:
                    try:
                        updates.append(
                            (row["account_id"], cipher.rotate(row["credentials_encrypted"]))
                        )
                    except CredentialsError:
                        failed += 1
                        log.error("account %s: token decrypts with no key", row["account_id"])
                # updated_at and credentials_version are left alone: the credential's
                # meaning did not change, so a sync's rotation from this version still
                # applies (the row lock orders it before or after this re-encryption).
                await conn.executemany(
                    "UPDATE airbnb.accounts SET credentials_encrypted = $2 WHERE account_id = $1",
                    updates,
                )
                rotated += len(updates)
                last = rows[-1]["account_id"]
    finally:
        await conn.close()
    return {"rotated": rotated, "failed": failed}


def main(args: argparse.Namespace) -> int:
    settings = load_settings(RotateKeysSettings, "rotate-keys")
    setup_logging("rotate-keys", settings.log_level)
    try:
        counts = asyncio.run(
            rotate_all(settings.database_url, CredentialCipher(settings.secret_keys))
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Each page of rows commits in its own transaction: a rerun finishes the rest.
        log.error(
            "rotate-keys could not reach or update PostgreSQL: %s: %s", type(exc).__name__, exc
        )
        return 1
    sys.stdout.write(orjson.dumps(counts).decode() + "\n")
    return 1 if counts["failed"] else 0
