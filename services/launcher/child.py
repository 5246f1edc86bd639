"""Trampoline of every child of ``up``: ``python -m services.launcher.child PROGRAM ARGS...``.

It asks the kernel to send SIGTERM to this process when its parent (``up``)
dies, then ``exec``s the program, which keeps that setting. So even a
``kill -9`` of ``up`` leaves no service or nats-server behind, although the
children run in their own sessions. Setting it here, after the fork, rather
than in a ``preexec_fn`` keeps the parent's fork free of Python code (``up``
runs threads). Linux only; elsewhere it simply execs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_PID_VAR = "SYNC_AIRBNB_UP_PID"


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died before prctl: then no signal comes, so end now.
    expected = os.environ.get(PARENT_PID_VAR)
    if expected and os.getppid() != int(expected):
        sys.exit(0)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m services.launcher.child PROGRAM [ARGS...]")
    die_with_parent()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
