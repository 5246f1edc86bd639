"""The writer's row codecs: a RowBatch's wire rows to the value lists a binary COPY takes.

Pure. :func:`convert_rows` turns each row (dates and timestamps as ISO strings) into
values in the table's column order; a row that can never be written raises
:class:`RowError`, so its message goes to the dead letters at once.
:func:`find_type_error` names the first value a column cannot hold. :class:`CopyStrategy`
remembers which tables go through a merge instead of a direct COPY.

The row conversion is the writer's only per-row Python work, so it is built from
lookups prepared once per table (an ``itemgetter`` over the column names, and a
short list of the columns that need a conversion or a type check).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final

from shared.airbnb.pivots import scrape_time
from shared.metric_tables import EXTRA_METRICS_COLUMN, METRIC_TABLES, MetricTable

Row = list[Any]


# --- row conversion -----------------------------------------------------------------------


class RowError(ValueError):
    """A row that can never be written: unknown columns, or a value of the wrong type."""


@lru_cache(maxsize=16_384)
def _parse_date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


@lru_cache(maxsize=1_024)
def _parse_timestamptz(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        # `time` is part of the row key; a zone-less value would mean a different instant
        # depending on the server's TimeZone setting.
        raise ValueError(f"timestamp {value!r} has no time zone")
    return parsed


def _to_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if type(value) is str:
        return _parse_date(value)
    if type(value) is dt.date:
        return value
    raise TypeError(f"expected an ISO date string, got {type(value).__name__}")


def _to_timestamptz(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if type(value) is str:
        return _parse_timestamptz(value)
    if type(value) is dt.datetime and value.tzinfo is not None:
        return value
    raise TypeError(f"expected an ISO timestamp with time zone, got {value!r}")


def _to_bigint(value: Any) -> int | None:
    # asyncpg's int8 encoder would silently truncate 1.5 to 1 (and take True as 1).
    if value is None or type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def _to_double(value: Any) -> float | int | None:
    # asyncpg's float8 encoder would take True as 1.0; strings it rejects itself, but
    # checking here names the column in the reason.
    if value is None or type(value) is float or type(value) is int:
        return value
    raise TypeError(f"expected a number, got {value!r}")


def _to_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _to_jsonb(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is dict:
        return value
    raise TypeError(f"expected an object, got {type(value).__name__}")


_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "date": _to_date,
    "timestamptz": _to_timestamptz,
    "bigint": _to_bigint,
    "double precision": _to_double,
    "text": _to_text,
    "jsonb": _to_jsonb,
}


@dataclass(frozen=True, slots=True)
class TableCodec:
    """Per-table lookups for :func:`convert_rows`, built once at import."""

    table: MetricTable
    columns: tuple[str, ...]
    column_set: frozenset[str]
    values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    key_of: Callable[[Sequence[Any]], tuple[Any, ...]]
    # Fast path: what every row needs (all date and timestamp columns are NOT NULL).
    date_indexes: tuple[int, ...]
    bigint_indexes: tuple[int, ...]
    double_indexes: tuple[int, ...]
    time_index: int
    # The key's date column (metric_date or window_start): within one chunk's account,
    # listing and scrape time, the only part of the key that varies.
    key_date_index: int
    extra_index: int
    account_index: int
    listing_index: int
    # Slow path: every column's converter, to name the column a bad value sits in.
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]


def _codec(table: MetricTable) -> TableCodec:
    columns = table.column_names
    index = {c: i for i, c in enumerate(columns)}
    by_type = lambda sql_type: tuple(index[c.name] for c in table.columns if c.sql_type == sql_type)  # noqa: E731
    return TableCodec(
        table=table,
        columns=columns,
        column_set=frozenset(columns),
        values_of=itemgetter(*columns),
        key_of=itemgetter(*(index[k] for k in table.key)),
        date_indexes=by_type("date"),
        bigint_indexes=by_type("bigint"),
        double_indexes=by_type("double precision"),
        time_index=index["time"],
        key_date_index=next(
            index[k] for k in table.key if k not in ("account_id", "airbnb_listing_id", "time")
        ),
        extra_index=index[EXTRA_METRICS_COLUMN],
        account_index=index["account_id"],
        listing_index=index["airbnb_listing_id"],
        converters=tuple((index[c.name], _CONVERTERS[c.sql_type]) for c in table.columns),
    )


CODECS: Final[dict[str, TableCodec]] = {name: _codec(t) for name, t in METRIC_TABLES.items()}


_STRICT_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "text": (str,),
    "double precision": (float, int),
    "bigint": (int,),
    "date": (dt.date,),
    "timestamptz": (dt.datetime,),
    "jsonb": (dict,),
}


def find_type_error(table: str, rows: Sequence[Sequence[Any]]) -> str:
    """Where a converted row holds a value of the wrong type, for a dead letter's reason.

    Only run after asyncpg refused the rows: :func:`convert_rows` leaves text and
    double columns to asyncpg, whose error does not name the column.
    """
    codec = CODECS[table]
    for n, row in enumerate(rows):
        for c, value in zip(codec.table.columns, row, strict=True):
            if value is not None and (
                type(value) is bool or not isinstance(value, _STRICT_TYPES[c.sql_type])
            ):
                return f"row {n}: {table}.{c.name} is {value!r}, expected {c.sql_type}"
    return "no single value to blame"


def _complete_values(codec: TableCodec, row: Mapping[str, Any], n: int) -> tuple[Any, ...]:
    unknown = row.keys() - codec.column_set
    if unknown:
        raise RowError(f"row {n}: {codec.table.name} has no column(s) {sorted(unknown)}")
    # A column the row leaves out is NULL (the pivots send every column; this is lenience).
    return tuple(row.get(c) for c in codec.columns)


def _convert_slowly(codec: TableCodec, values: Sequence[Any], n: int) -> Row:
    """Every column through its converter: accepts what the fast path does not (date
    objects, integral floats in bigint columns) and names the column of a bad value."""
    converted = list(values)
    for i, convert in codec.converters:
        try:
            converted[i] = convert(converted[i])
        except (TypeError, ValueError) as exc:
            raise RowError(f"row {n}: {codec.table.name}.{codec.columns[i]}: {exc}") from None
    return converted


def convert_rows(
    codec: TableCodec,
    rows: Sequence[Mapping[str, Any]],
    *,
    account_id: str,
    listing_id: str,
    scrape_day: dt.date,
) -> list[Row]:
    """Wire rows -> value lists in ``codec.columns`` order; RowError if one can never be written.

    Dates and timestamps are parsed, ``extra_metrics`` must be an object (None is
    ``{}``; the writer's connections encode it, see store.init_connection), bigint
    values must be integers (asyncpg would truncate 1.5 to 1), double values must not
    be booleans (asyncpg takes True as 1.0). Text and double columns are otherwise
    left to asyncpg's binary encoder, which rejects a wrong type with
    TypeError at COPY time: checking ~25 values per row here would cost more than
    the rest of the write. Every row must belong to the chunk's account and listing
    and carry its scrape day as ``time``: the ledger counts a chunk once for its
    listing, so a stray row would land under the wrong identity.
    """
    time = scrape_time(scrape_day)
    width = len(codec.columns)
    values_of = codec.values_of
    key_of = codec.key_of
    date_indexes, bigint_indexes = codec.date_indexes, codec.bigint_indexes
    double_indexes = codec.double_indexes
    time_i, extra_i = codec.time_index, codec.extra_index
    acc_i, lst_i = codec.account_index, codec.listing_index
    parse_date, parse_ts = _parse_date, _parse_timestamptz
    out: list[Row] = []
    append = out.append
    for n, row in enumerate(rows):
        try:
            values = values_of(row)
            if len(row) != width:
                raise KeyError
        except KeyError:
            values = _complete_values(codec, row, n)
        converted = list(values)
        try:
            for i in date_indexes:
                converted[i] = parse_date(converted[i])
            converted[time_i] = parse_ts(converted[time_i])
            for i in bigint_indexes:
                v = converted[i]
                if v is not None and type(v) is not int:
                    raise TypeError
            # bool is an int, and asyncpg would store True as 1.0; the cheapest check
            # that keeps it out (a float or an int goes on to asyncpg's encoder as is).
            for i in double_indexes:
                if type(converted[i]) is bool:
                    raise TypeError
            if type(converted[extra_i]) is not dict:
                raise TypeError
        except (TypeError, ValueError):
            converted = _convert_slowly(codec, values, n)
        if (
            converted[acc_i] != account_id
            or converted[lst_i] != listing_id
            or converted[time_i] != time
        ):
            raise RowError(
                f"row {n}: (account_id, airbnb_listing_id, time) = "
                f"({converted[acc_i]!r}, {converted[lst_i]!r}, {converted[time_i]}) "
                f"does not match the chunk ({account_id!r}, {listing_id!r}, {time})"
            )
        if None in key_of(converted):
            raise RowError(f"row {n}: a key column {codec.table.key} is null")
        append(converted)
    return out


@dataclass(slots=True)
class CopyStrategy:
    """Whether a table's rows are COPied straight into it or merged through a temp table.

    A direct COPY is as fast as PostgreSQL can load rows, and it is the normal case:
    rows of a new scrape day are new keys, and chunks already committed never reach
    the COPY (the ledger). It fails on the first row that exists already (a second
    sync of the same day); the batch then merges with ON CONFLICT DO UPDATE instead,
    and the next ``cooldown`` batches of that table go straight to the merge rather
    than pay for a failed COPY each time. Only a speed hint: a restart forgets it and
    nothing else changes.
    """

    cooldown: int = 20
    skip: dict[str, int] = field(default_factory=dict)

    def direct(self, table: str) -> bool:
        left = self.skip.get(table, 0)
        if left > 0:
            self.skip[table] = left - 1
            return False
        return True

    def conflicted(self, table: str) -> None:
        self.skip[table] = self.cooldown
