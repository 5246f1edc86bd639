"""The Grafana dashboards of deploy/grafana as the tests read them, and Grafana's own
expansion of a SQL query before it reaches PostgreSQL.

A panel's ``rawSql`` goes through two steps in Grafana, and :func:`expand_sql` does both
in the same order with the same rules:

1. The browser's template service replaces dashboard variables (``$name``, ``${name}``,
   ``[[name]]``). For a SQL datasource a single value is inserted as it is with each
   ``'`` doubled, so a query writes ``'$account'``; a multi-value or include-all
   variable becomes a comma-separated list of quoted literals, for ``IN ($listing)``
   (``SqlDatasource.interpolateVariable`` in Grafana's frontend).
2. The PostgreSQL datasource's backend replaces ``$__interval_ms``, ``$__interval``,
   ``$__unixEpochFrom()`` and ``$__unixEpochTo()``, then every macro
   ``$__name(args)`` (the arguments run to the first ``)``, split on commas):
   ``$__timeFilter(c)`` is ``c BETWEEN '<from>' AND '<to>'`` with RFC 3339 UTC times,
   ``$__timeFrom()``/``$__timeTo()`` the quoted times, ``$__timeGroup(c, '1d')``
   ``floor(extract(epoch from c)/86400)*86400`` (``time_bucket('86400.000s',c)`` when
   the datasource says timescaledb), ``$__timeGroupAlias`` the same ``AS "time"``,
   ``$__unixEpochFilter(c)`` ``c >= <from s> AND c <= <to s>``. An unknown macro is an
   error, as in Grafana. (Grafana's PostgreSQL datasource documentation, Macros.)
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
POSTGRES_TYPE = "grafana-postgresql-datasource"
PROMETHEUS_TYPE = "prometheus"

# Grafana's templateSrv variable syntax: $name, [[name]] (with :format), ${name} (with
# .field and :format).
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
# The backend's macro syntax (pkg/tsdb/grafana-postgresql-datasource): arguments up to the
# first closing parenthesis.
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown, or missing its arguments)."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current value, as Grafana's template service holds it."""

    value: str | list[str]
    multi: bool = False
    include_all: bool = False


@dataclass(frozen=True)
class SqlTarget:
    dashboard: str
    panel: str
    ref_id: str
    raw_sql: str
    format: str


def load_dashboards() -> dict[str, dict[str, Any]]:
    """file name -> dashboard JSON, for every dashboard file."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def sql_targets(name: str, dashboard: Mapping[str, Any]) -> Iterator[SqlTarget]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == POSTGRES_TYPE:
                yield SqlTarget(
                    name, panel["title"], target["refId"], target["rawSql"], target["format"]
                )


def promql_exprs(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every Prometheus target."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == PROMETHEUS_TYPE:
                yield panel["title"], target["expr"]


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def rfc3339(t: dt.datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: fraction without trailing zeros, 'Z'."""
    t = t.astimezone(dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def go_number(x: float) -> str:
    """Go's %v of a float64 at these magnitudes: 86400, not 86400.0."""
    return str(int(x)) if x == int(x) else repr(x)


def interval_seconds(text: str) -> float:
    m = _INTERVAL.fullmatch(text.strip().strip("'"))
    if m is None:
        raise MacroError(f"error parsing interval {text}")
    return float(m[1]) * _UNIT_SECONDS[m[2]]


def format_interval(seconds: float) -> str:
    """Grafana's gtime.FormatInterval (the largest whole unit)."""
    for unit in ("y", "w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def interpolate_variables(sql: str, values: Mapping[str, Variable]) -> str:
    """Step 1: the template service with the SQL datasource's interpolateVariable."""

    def quote(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def replace(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[4]
        variable = values.get(name)
        if variable is None:  # not a dashboard variable: left as it is, like Grafana
            return m[0]
        if isinstance(variable.value, list):
            return ",".join(quote(v) for v in variable.value)
        if variable.multi or variable.include_all:
            return quote(variable.value)
        return variable.value.replace("'", "''")

    return _VARIABLE.sub(replace, sql)


def expand_macros(
    sql: str,
    time_from: dt.datetime,
    time_to: dt.datetime,
    *,
    interval: dt.timedelta = dt.timedelta(minutes=1),
    timescaledb: bool = False,
) -> str:
    """Step 2: the PostgreSQL datasource's backend."""
    sql = sql.replace("$__interval_ms", str(int(interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", format_interval(interval.total_seconds()))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_from.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_to.timestamp())))
    start, end = rfc3339(time_from), rfc3339(time_to)

    def group(args: list[str]) -> str:
        if len(args) < 2:
            raise MacroError("$__timeGroup needs a time column and an interval")
        seconds = interval_seconds(args[1])
        if timescaledb:
            return f"time_bucket('{seconds:.3f}s',{args[0]})"
        n = go_number(seconds)
        return f"floor(extract(epoch from {args[0]})/{n})*{n}"

    def evaluate(name: str, args: list[str]) -> str:
        needs_column = name in {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter"}
        if needs_column and not args[0]:
            raise MacroError(f"missing time column argument for macro {name}")
        match name:
            case "__time":
                return f'{args[0]} AS "time"'
            case "__timeEpoch":
                return f'extract(epoch from {args[0]}) as "time"'
            case "__timeFilter":
                return f"{args[0]} BETWEEN '{start}' AND '{end}'"
            case "__timeFrom":
                return f"'{start}'"
            case "__timeTo":
                return f"'{end}'"
            case "__timeGroup":
                return group(args)
            case "__timeGroupAlias":
                return group(args) + ' AS "time"'
            case "__unixEpochFilter":
                return (
                    f"{args[0]} >= {int(time_from.timestamp())} AND "
                    f"{args[0]} <= {int(time_to.timestamp())}"
                )
            case _:
                raise MacroError(f"unknown macro {name!r}")

    def replace(m: re.Match[str]) -> str:
        name = m[1]
        # Grafana's pre-5.3 form: $__timeGroup(...) directly followed by a comma adds the alias.
        if name == "__timeGroup" and sql[m.end() : m.end() + 1] == ",":
            name = "__timeGroupAlias"
        return evaluate(name, [a.strip() for a in m[2].split(",")])

    return _MACRO.sub(replace, sql)


def expand_sql(
    sql: str,
    time_from: dt.datetime,
    time_to: dt.datetime,
    values: Mapping[str, Variable],
    *,
    timescaledb: bool = False,
) -> str:
    """What PostgreSQL receives from Grafana for this query, time range and variables."""
    return expand_macros(
        interpolate_variables(sql, values), time_from, time_to, timescaledb=timescaledb
    )
