"""Metrics export: one account, one table, an inclusive date range, as CSV or JSON.

Rows come from a server-side cursor (asyncpg, inside a read-only repeatable-read
transaction, so the export is one consistent snapshot) in batches of
``EXPORT_FETCH_ROWS`` and go out through a chunked ``web.StreamResponse``. At
most one batch and one encoded chunk are in memory at a time, and
``resp.write`` waits while the client is slow, so memory stays flat whatever the
export's size.

The table is chosen by name from ``shared.metric_tables`` (a whitelist), and the
columns are that table's; no identifier comes from the request.

The export's query and its cursor stay here, beside the loop that streams them (the
cursor lives inside the transaction and the response); the account check is
services/admin/store.py's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from services.admin import store
from services.admin.errors import ApiError, not_found
from services.admin.models import ExportQuery, FieldError
from shared.metric_tables import EXTRA_METRICS_COLUMN, METRIC_TABLES, MetricTable

log = logging.getLogger("sync_airbnb.admin.export")

# Flush to the socket once this much is encoded; big enough for few syscalls, small enough
# to keep memory flat.
FLUSH_BYTES = 256 * 1024


def date_column(table: MetricTable) -> str:
    """The column the date range applies to: the day of a chart point, or a window's start."""
    return "metric_date" if "metric_date" in table.key else "window_start"


def export_sql(table: MetricTable) -> str:
    cols = ", ".join(f'"{c}"' for c in table.column_names)
    day = date_column(table)
    # The primary key (account_id first) finds the account's rows of the range and
    # PostgreSQL sorts them (spilling to disk past work_mem, so the server's memory stays
    # bounded too). No export index: the writer would pay for it on every row it stores
    # (migrations/0003_drop_export_indexes.sql).
    return (
        f"SELECT {cols} FROM {table.qualified_name}"
        f' WHERE account_id = $1 AND "{day}" BETWEEN $2 AND $3'
        f' ORDER BY "{day}", "time" DESC, airbnb_listing_id'
    )


def check_span(q: ExportQuery, max_days: int) -> None:
    days = (q.end_date - q.start_date).days + 1
    if days > max_days:
        raise ApiError(
            422,
            "validation_error",
            f"invalid query: end_date (the range spans {days} days; at most {max_days})",
            fields=[
                FieldError(
                    field="end_date",
                    message=f"the range spans {days} days; at most {max_days} are allowed",
                    type="range_too_long",
                )
            ],
        )


def _iso(v: dt.datetime | None) -> str | None:
    return None if v is None else v.isoformat()


def _json_text(v: object) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


class CsvEncoder:
    """Encodes record batches as CSV (header first); None is an empty field."""

    media_type = "text/csv"

    def __init__(self, table: MetricTable) -> None:
        self.columns = table.column_names
        # Only these columns need converting; str() of a date, number or text is what CSV
        # wants already (and None is an empty field).
        self._convert: list[tuple[int, Callable[[Any], Any]]] = []
        for i, c in enumerate(table.columns):
            if c.sql_type == "timestamptz":
                self._convert.append((i, _iso))
            elif c.name == EXTRA_METRICS_COLUMN:
                self._convert.append((i, _json_text))
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")

    def head(self) -> bytes:
        self._writer.writerow(self.columns)
        return self._take()

    def batch(self, records: Sequence[asyncpg.Record]) -> bytes:
        convert = self._convert
        out = []
        for rec in records:
            row = list(rec)
            for i, f in convert:
                row[i] = f(row[i])
            out.append(row)
        self._writer.writerows(out)
        return self._take()

    def tail(self) -> bytes:
        return b""

    def _take(self) -> bytes:
        data = self._buf.getvalue().encode()
        self._buf.seek(0)
        self._buf.truncate()
        return data


class JsonEncoder:
    """Encodes record batches as one JSON array of objects, streamed element by element."""

    media_type = "application/json"

    def __init__(self, table: MetricTable) -> None:
        self.columns = table.column_names
        self._first = True

    def head(self) -> bytes:
        return b"["

    def batch(self, records: Sequence[asyncpg.Record]) -> bytes:
        if not records:
            return b""
        # One orjson call per batch; the brackets of the batch's own array are cut off.
        body = orjson.dumps([dict(r) for r in records])[1:-1]
        if self._first:
            self._first = False
            return body
        return b"," + body

    def tail(self) -> bytes:
        return b"]"


class MetricsExport:
    def __init__(self, pool: asyncpg.Pool, *, max_days: int, fetch_rows: int) -> None:
        self._pool = pool
        self._max_days = max_days
        self._fetch_rows = fetch_rows

    async def stream(
        self,
        request: web.Request,
        account_id: str,
        q: ExportQuery,
        scope_customer: str | None = None,
    ) -> web.StreamResponse:
        """The rows of one account: a customer key's own accounts only (another
        customer's is not found, by the store's SQL)."""
        check_span(q, self._max_days)
        table = METRIC_TABLES[q.table]
        encoder: CsvEncoder | JsonEncoder = (
            CsvEncoder(table) if q.format == "csv" else JsonEncoder(table)
        )
        async with self._pool.acquire() as conn:
            if not await store.account_exists(conn, account_id, scope_customer):
                raise not_found("account", account_id)
            resp = web.StreamResponse(
                headers={
                    "Content-Type": f"{encoder.media_type}; charset=utf-8",
                    "Content-Disposition": (
                        f'attachment; filename="{account_id}_{q.table}_'
                        f'{q.start_date}_{q.end_date}.{q.format}"'
                    ),
                }
            )
            resp.enable_chunked_encoding()
            rows = 0
            try:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    cursor = await conn.cursor(
                        export_sql(table), account_id, q.start_date, q.end_date
                    )
                    await resp.prepare(request)
                    pending = bytearray(encoder.head())
                    while batch := await cursor.fetch(self._fetch_rows):
                        rows += len(batch)
                        pending += encoder.batch(batch)
                        if len(pending) >= FLUSH_BYTES:
                            await resp.write(bytes(pending))
                            pending.clear()
                    pending += encoder.tail()
                    await resp.write(bytes(pending))
            except (ConnectionResetError, ConnectionError):
                log.info(
                    "export of %s %s: client went away after %d rows", account_id, q.table, rows
                )
                raise
            except Exception:
                if not resp.prepared:
                    raise
                # The status line is sent: an error can no longer be a JSON answer. Log it and
                # cut the connection, so the client sees an incomplete transfer, never a
                # complete-looking file with rows missing.
                log.exception("export of %s %s failed after %d rows", account_id, q.table, rows)
                if request.transport is not None:
                    request.transport.close()
                return resp
        await resp.write_eof()
        log.info(
            "exported %d %s rows of %s (%s to %s, %s)",
            rows,
            q.table,
            account_id,
            q.start_date,
            q.end_date,
            q.format,
        )
        return resp
