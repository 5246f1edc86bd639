"""``sync-airbnb up``: every service in one process tree, for one machine.

See :mod:`services.launcher` for the decisions (restart policy, stop order,
ports). :func:`run_stack` is shared with ``demo``: it starts a
:class:`~services.launcher.stack.LocalStack`, runs ``on_ready`` once it is up,
and stops everything on SIGTERM/SIGINT, on a fatal child, or when ``on_ready``
returns an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TextIO

from services.launcher.embedded import EmbeddedUnavailable
from services.launcher.settings import LauncherSettings
from services.launcher.stack import LocalStack, StackError, StackInfo, Stopped, banner
from services.launcher.supervisor import ChildSpec, LineSink, Notice, Supervisor
from shared.settings import EXIT_CONFIG, load_settings

# Returns an exit code to stop the stack with, or None to keep it running until a signal.
OnReady = Callable[[StackInfo, LocalStack], Awaitable[int | None]]

LAUNCHER_NAME = "up"


def prefix_width(fetchers: int, writers: int, extra: Sequence[str] = ()) -> int:
    names = ["scheduler", "migrate", f"fetcher-{fetchers}", f"writer-{writers}", *extra]
    return max(len(n) for n in names)


def prefixed(name: str, line: str, width: int) -> str:
    return f"{name:<{width}} | {line}"


def prefixed_sink(stream: TextIO, width: int) -> LineSink:
    def sink(name: str, line: str) -> None:
        # A closed stdout (`up | head`) must not take the supervisor down.
        with contextlib.suppress(BrokenPipeError, ValueError):
            stream.write(prefixed(name, line, width) + "\n")
            stream.flush()

    return sink


async def run_stack(
    settings: LauncherSettings,
    *,
    sink: LineSink,
    notice: Notice,
    on_ready: OnReady,
    extra_env: Mapping[str, str] | None = None,
    extra_children: Sequence[ChildSpec] = (),
) -> int:
    supervisor = Supervisor(
        sink,
        notice,
        stop_timeout_s=settings.up_stop_timeout_s,
        backoff_cap_s=settings.up_restart_backoff_max_s,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            notice(f"{sig.name} again: killing what is left")
            supervisor.kill_all()
            return
        notice(f"{sig.name} received: stopping (again to kill at once)")
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    stack = LocalStack(settings, supervisor, stopping, notice, dict(extra_env or {}))
    code = 0
    try:
        info = await stack.start(extra_children)
        code = await _run_until_stopped(on_ready(info, stack), stopping, supervisor.fatal)
    except Stopped:
        pass
    except StackError as exc:
        notice(str(exc))
        code = exc.code
    except EmbeddedUnavailable as exc:
        notice(str(exc))
        code = EXIT_CONFIG
    finally:
        notice("stopping")
        await stack.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        notice("stopped")
    return code or supervisor.fatal_code


async def _run_until_stopped(
    ready: Awaitable[int | None], stopping: asyncio.Event, fatal: asyncio.Event
) -> int:
    """``ready``'s exit code; if it returns None, 0 once a signal or a fatal child comes.
    A signal or a fatal child during ``ready`` cancels it."""
    task = asyncio.ensure_future(ready)
    stop = asyncio.ensure_future(stopping.wait())
    dead = asyncio.ensure_future(fatal.wait())
    try:
        await asyncio.wait({task, stop, dead}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            return 0
        result = task.result()  # raises what on_ready raised
        if result is not None:
            return result
        await asyncio.wait({stop, dead}, return_when=asyncio.FIRST_COMPLETED)
        return 0
    finally:
        for t in (task, stop, dead):
            t.cancel()
        with contextlib.suppress(BaseException):
            await task


def main(args: argparse.Namespace) -> int:
    settings = load_settings(LauncherSettings, "up")
    width = prefix_width(settings.up_fetchers, settings.up_writers, ["nats", LAUNCHER_NAME])
    sink = prefixed_sink(sys.stdout, width)

    def notice(text: str) -> None:
        sink(LAUNCHER_NAME, text)

    async def on_ready(info: StackInfo, _: LocalStack) -> int | None:
        for line in banner(info):
            notice(line)
        return None

    return asyncio.run(run_stack(settings, sink=sink, notice=notice, on_ready=on_ready))
