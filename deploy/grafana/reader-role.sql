-- A PostgreSQL role for Grafana that reads what the dashboards show and nothing else: no
-- write of any kind, and of airbnb.accounts not the encrypted Airbnb cookies. Run it once
-- as a superuser in the sync-airbnb database after `sync-airbnb migrate`, give the role a
-- password, and set it as Grafana's SYNC_AIRBNB_PG_USER / SYNC_AIRBNB_PG_PASSWORD:
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/grafana/reader-role.sql
--   psql "$DATABASE_URL" -c '\password grafana_reader'
--
-- tests/system/test_grafana_dashboards.py runs every dashboard query as this role.
CREATE ROLE grafana_reader LOGIN;
GRANT USAGE ON SCHEMA airbnb TO grafana_reader;
GRANT SELECT ON airbnb.listings, airbnb.chart_query, airbnb.list_of_metrics,
    airbnb.chart_summary, airbnb.chart_query_latest, airbnb.list_of_metrics_latest,
    airbnb.chart_summary_latest, airbnb.sync_jobs TO grafana_reader;
GRANT SELECT (account_id, customer_id, is_active, credentials_invalid_at, last_sync_at,
    created_at, deleted_at) ON airbnb.accounts TO grafana_reader;
