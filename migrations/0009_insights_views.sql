-- depends: 0008_sync_triggers
-- "The latest scrape per key" of each metrics table (docs/insights.md): every date is
-- scraped again on later days (a chart point ~49 times), and what a date's value is
-- depends on the scrape; these views hold, per (account, listing, date), the row of the
-- newest scrape. Filters on the key columns (account_id, airbnb_listing_id, metric_date
-- or window_start) are pushed into the DISTINCT ON by the planner, so a query on one
-- listing and a date range reads only that range of the primary key, which, scanned
-- backwards, yields each key's newest scrape first: no index of their own, so the writer,
-- which pays for every index on every row it stores, pays nothing for them.
--
-- The admin's read API answers "as of a past day" with the same shape and a bound on
-- time (services/admin/store.py builds both); plain views work the same on plain tables
-- and on TimescaleDB hypertables.

CREATE VIEW airbnb.chart_query_latest AS
SELECT DISTINCT ON (account_id, airbnb_listing_id, metric_date) *
FROM airbnb.chart_query
ORDER BY account_id, airbnb_listing_id, metric_date, time DESC;

CREATE VIEW airbnb.list_of_metrics_latest AS
SELECT DISTINCT ON (account_id, airbnb_listing_id, window_start) *
FROM airbnb.list_of_metrics
ORDER BY account_id, airbnb_listing_id, window_start, time DESC;

CREATE VIEW airbnb.chart_summary_latest AS
SELECT DISTINCT ON (account_id, airbnb_listing_id, window_start) *
FROM airbnb.chart_summary
ORDER BY account_id, airbnb_listing_id, window_start, time DESC;
