"""What migration 0002 made before it asked for no default index and left chart_summary
uncompressed (docs/timescaledb.md), undone where a deployment has it.

create_hypertable adds an index on ``time DESC`` to each table unless told not to: it
undid 0003 (the primary key is meant to be each metrics table's only index) and slowed
the writer's COPY by 25-30 %. DROP INDEX IF EXISTS is a no-op on plain tables, so it runs
whatever TIMESCALEDB says. chart_summary came out bigger compressed than not (ratio 0.75):
where it is compressed, its chunks are decompressed and compression is turned off.
"""

from yoyo import step

from shared.migrate import (
    COMPRESSION,
    default_time_index,
    timescaledb_in_use,
    uncompress_if_compressed,
)

__depends__ = {"0004_credentials_version"}


def apply(conn):
    cur = conn.cursor()
    for table in COMPRESSION:
        cur.execute(f"DROP INDEX IF EXISTS {default_time_index(table)}")
    if not timescaledb_in_use(cur):
        return
    for table, compression in COMPRESSION.items():
        if compression is None:
            uncompress_if_compressed(cur, table)


steps = [step(apply)]
