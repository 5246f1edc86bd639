-- depends: 0004_credentials_version
-- The daily run of each scrape day, as the scheduler's leader began and finished it
-- (docs/data-path.md, "Scheduler"). A row is inserted before the fan-out and
-- finished after it: a day with a finished row is never run again (a restart, a new
-- leader), a row never finished (its leader died mid-fan-out) is resumed by the next
-- leader, and a day with no row whose run time has passed is caught up at start.
CREATE TABLE airbnb.scheduler_runs (
    scrape_day date PRIMARY KEY,
    -- the scheduler (SCHEDULER_NAME) that last began it
    leader text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- 1, plus one per leader that resumed it
    attempts integer NOT NULL DEFAULT 1,
    accounts integer,
    jobs_created integer NOT NULL DEFAULT 0
);
