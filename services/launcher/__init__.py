"""One-machine commands: ``up``, ``demo`` and ``sync ACCOUNT_ID [--full] [--wait]``.

``up`` (:mod:`services.launcher.up`) runs the whole system as one process tree:
``migrate`` once, then admin, scheduler, ``UP_FETCHERS`` fetchers and
``UP_WRITERS`` writers as child processes (:mod:`services.launcher.supervisor`),
each line of their output prefixed with the child's name (``fetcher-1 | ...``).
When ``DATABASE_URL`` or ``NATS_URL`` is unset it starts an embedded PostgreSQL
or ``nats-server -js`` (:mod:`services.launcher.embedded`) whose data lives in
the state directory (``SYNC_AIRBNB_STATE_DIR``, default
``$XDG_DATA_HOME/sync-airbnb`` or ``~/.local/share/sync-airbnb``), so a restart
keeps it. ``SECRET_KEYS`` and ``ADMIN_API_KEYS``, when unset, are generated once
into ``<state>/secrets.env`` (mode 0600) and reused (:mod:`services.launcher.state`).

Decisions, for the next person:

* A child that dies unexpectedly is logged and restarted with exponential
  backoff (1 s doubling up to ``UP_RESTART_BACKOFF_MAX_S``; a child that ran
  for a minute starts again from 1 s). A stateless service restarted is what
  Kubernetes or compose would do too, and invariant 5 makes it safe. The one
  exception is exit code 2, a configuration error: restarting cannot fix it, so
  ``up`` stops everything and exits 2.
* SIGTERM or SIGINT stops the services first (SIGTERM to each child's process
  group, SIGKILL after ``UP_STOP_TIMEOUT_S``), then the simulator, then the
  embedded NATS, then the embedded PostgreSQL (``pg_ctl stop -m fast``), and
  exits 0. A second signal kills what is left at once. Children run in their own
  sessions, so a terminal's Ctrl-C reaches only ``up``, which stops them in that
  order; they also get SIGTERM from the kernel if ``up`` itself is killed
  (``PR_SET_PDEATHSIG``, Linux), see :mod:`services.launcher.child`.
* Services other than admin get ``HTTP_PORT=0`` (several replicas of one
  service cannot share a port); each logs the port it chose.
* The embedded PostgreSQL listens on a unix socket only (no TCP port to clash
  with another server); ``up`` prints its ``DATABASE_URL``. The embedded NATS
  listens on 127.0.0.1, port ``UP_NATS_PORT`` (default 4222, or a free port
  when 4222 is taken and ``UP_NATS_PORT`` was not set); ``up`` prints its
  ``NATS_URL``, which ``sync-airbnb sync`` needs.

``demo`` (:mod:`services.launcher.demo`) is ``up`` plus the simulator with
three accounts of 4, 6 and 7 listings (:mod:`services.launcher.demo_world`),
registered over the admin API, their backfill shown as progress bars, and a
report (:mod:`services.launcher.report`). ``sync`` is
:mod:`services.launcher.sync_command`.
"""
