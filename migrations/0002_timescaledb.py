"""Hypertables, compression and retention where TimescaleDB is used.

``sync-airbnb migrate`` decides that before any migration runs (``TIMESCALEDB``,
docs/timescaledb.md) and tells this step on its session; where TimescaleDB is not used
the metrics tables stay plain PostgreSQL tables and migrate logs why. The statements are
shared.migrate.hypertable_sql: no default ``time`` index, and chart_summary uncompressed.
"""

from yoyo import step

from shared.migrate import ensure_hypertables, timescale_options, timescaledb_in_use

__depends__ = {"0001_schema"}


def apply(conn):
    cur = conn.cursor()
    if not timescaledb_in_use(cur):
        return
    cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    ensure_hypertables(cur, timescale_options(cur))


steps = [step(apply)]
