-- The export indexes of 0001 go: every metrics row the writer stores paid for a second
-- B-tree, for a read path (one account's export over a date range) that the primary key
-- serves too: it leads with account_id, and PostgreSQL sorts the account's rows of the
-- range. Measured in benchmarks/bench_writer.py (RESULTS.md): COPY into the table with
-- the primary key alone is 10-30 % faster than with both indexes. DROP INDEX works on
-- plain tables and on TimescaleDB hypertables alike (it drops the chunks' indexes too).
-- depends: 0002_timescaledb

DROP INDEX IF EXISTS airbnb.chart_query_export_idx;
DROP INDEX IF EXISTS airbnb.chart_summary_export_idx;
DROP INDEX IF EXISTS airbnb.list_of_metrics_export_idx;
