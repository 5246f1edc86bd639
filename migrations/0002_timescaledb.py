"""Hypertables, compression and retention where TimescaleDB is available.

Where it is not, the metrics tables stay plain PostgreSQL tables: the step does
nothing and ``sync-airbnb migrate`` logs that TimescaleDB is absent.
"""

from yoyo import step

from shared.migrate import timescale_options

__depends__ = {"0001_schema"}

METRIC_TABLES = ("chart_query", "chart_summary", "list_of_metrics")
ORDER_BY = {
    "chart_query": "metric_date DESC",
    "chart_summary": "window_start DESC",
    "list_of_metrics": "window_start DESC",
}


def apply(conn):
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if cur.fetchone() is None:
        return
    options = timescale_options(cur)
    cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for table in METRIC_TABLES:
        name = f"airbnb.{table}"
        cur.execute(
            "SELECT create_hypertable(%s, 'time', if_not_exists => TRUE, "
            "migrate_data => TRUE, chunk_time_interval => INTERVAL '7 days')",
            (name,),
        )
        cur.execute(
            f"ALTER TABLE {name} SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'account_id, airbnb_listing_id', "
            f"timescaledb.compress_orderby = '{ORDER_BY[table]}')"
        )
        cur.execute(
            "SELECT add_compression_policy(%s, %s::interval, if_not_exists => TRUE)",
            (name, options.compress_after),
        )
        cur.execute(
            "SELECT add_retention_policy(%s, %s::interval, if_not_exists => TRUE)",
            (name, options.retention),
        )


steps = [step(apply)]
