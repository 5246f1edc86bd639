"""Child processes of ``up``: started, their output prefixed, restarted, stopped.

Every child runs in its own session (its own process group), under the
:mod:`services.launcher.child` trampoline, with stdout and stderr merged into a
pipe that is read line by line and handed to a sink with the child's name. A
supervised child that exits while nobody asked it to is restarted after
:func:`restart_delay`; exit code 2 (a configuration error) is fatal instead,
since a restart would only fail the same way. :meth:`Supervisor.stop` sends
SIGTERM to each child's process group, waits up to ``stop_timeout_s``, then
sends SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from services.launcher.child import PARENT_PID_VAR
from shared.backoff import capped_backoff
from shared.settings import EXIT_CONFIG

# (child name, one line of its output without the newline)
LineSink = Callable[[str, str], None]
# A line of the supervisor's own: a child died, was restarted, was killed.
Notice = Callable[[str], None]

# Longest output line read as one; longer lines are cut into pieces of this size.
MAX_LINE = 1024 * 1024
# A child that ran this long before dying is restarted after the base delay again.
HEALTHY_AFTER_S = 60.0
BACKOFF_BASE_S = 1.0


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    # False: a one-shot command (migrate); its exit is its result, never restarted.
    restart: bool = True


def service_argv(command: str, *args: str) -> tuple[str, ...]:
    """A ``sync-airbnb`` command run by this very interpreter (no PATH lookup)."""
    return (sys.executable, "-m", "services.cli", command, *args)


# --- the pure part ------------------------------------------------------------------------

ExitAction = Literal["done", "restart", "fatal"]


def exit_action(returncode: int, *, stopping: bool, restart: bool) -> ExitAction:
    if stopping:
        return "done"
    if not restart:
        return "done"
    if returncode == EXIT_CONFIG:
        return "fatal"
    return "restart"


def restart_delay(failures: int, *, base_s: float, cap_s: float) -> float:
    """Exponential backoff: ``base_s`` after the first failure in a row, doubling, capped."""
    return capped_backoff(failures, base_s, cap_s)


def failures_in_a_row(previous: int, ran_for_s: float, healthy_after_s: float) -> int:
    return 1 if ran_for_s >= healthy_after_s else previous + 1


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


# --- the imperative shell -----------------------------------------------------------------


@dataclass
class _Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[int] | None = None
    stopping: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(
        self,
        sink: LineSink,
        notice: Notice,
        *,
        stop_timeout_s: float,
        backoff_cap_s: float,
        backoff_base_s: float = BACKOFF_BASE_S,
        healthy_after_s: float = HEALTHY_AFTER_S,
    ) -> None:
        self._sink = sink
        self._notice = notice
        self._stop_timeout_s = stop_timeout_s
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._healthy_after_s = healthy_after_s
        self._children: dict[str, _Child] = {}
        # Set when a child ended in a way that must stop everything; see fatal_code.
        self.fatal = asyncio.Event()
        self.fatal_code = 0
        self.fatal_reason = ""

    # --- start --------------------------------------------------------------------------

    def start(self, spec: ChildSpec) -> None:
        """Run ``spec`` in the background until :meth:`stop`, restarting it as it dies."""
        if spec.name in self._children:
            raise ValueError(f"a child named {spec.name} is already running")
        child = _Child(spec)
        self._children[spec.name] = child
        child.task = asyncio.create_task(self._supervise(child), name=f"supervise-{spec.name}")

    async def run(self, spec: ChildSpec) -> int:
        """Run a one-shot command to its end (a :meth:`stop` ends it too); its exit code."""
        self.start(ChildSpec(spec.name, spec.argv, spec.env, restart=False))
        child = self._children[spec.name]
        assert child.task is not None
        try:
            return await asyncio.shield(child.task)
        finally:
            if child.task.done():
                self._children.pop(spec.name, None)

    def names(self) -> list[str]:
        return list(self._children)

    def pids(self) -> dict[str, int]:
        return {
            name: c.proc.pid
            for name, c in self._children.items()
            if c.proc is not None and c.proc.returncode is None
        }

    async def _spawn(self, spec: ChildSpec) -> asyncio.subprocess.Process:
        env = {**spec.env, PARENT_PID_VAR: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.launcher.child",
            *spec.argv,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=MAX_LINE,
        )

    async def _supervise(self, child: _Child) -> int:
        spec = child.spec
        failures = 0
        while True:
            started = time.monotonic()
            try:
                proc = await self._spawn(spec)
            except OSError as exc:
                self._notice(f"{spec.name} could not start: {exc}")
                returncode = 127
            else:
                child.proc = proc
                pump = asyncio.create_task(self._pump(spec.name, proc))
                returncode = await proc.wait()
                # The pipe may outlive the process (a grandchild holding it): bounded.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pump), timeout=2)
                pump.cancel()
            action = exit_action(returncode, stopping=child.stopping, restart=spec.restart)
            if action == "done":
                return returncode
            if action == "fatal":
                self._notice(
                    f"{spec.name} {describe_exit(returncode)} (a configuration error); "
                    "stopping everything"
                )
                self.fatal_code = EXIT_CONFIG
                self.fatal_reason = f"{spec.name}: configuration error"
                self.fatal.set()
                return returncode
            failures = failures_in_a_row(
                failures, time.monotonic() - started, self._healthy_after_s
            )
            delay = restart_delay(failures, base_s=self._backoff_base_s, cap_s=self._backoff_cap_s)
            self._notice(
                f"{spec.name} {describe_exit(returncode)} unexpectedly; restarting in {delay:g}s"
            )
            child.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wake.wait(), timeout=delay)
            if child.stopping:
                return returncode

    async def _pump(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:
                # A line over MAX_LINE: take what is buffered as one piece.
                line = await proc.stdout.read(MAX_LINE)
            if not line:
                return
            self._sink(name, line.decode("utf-8", errors="replace").rstrip("\r\n"))

    # --- stop ---------------------------------------------------------------------------

    async def stop(self, names: Iterable[str] | None = None) -> None:
        """Stop these children (all when None) together: SIGTERM, then SIGKILL after the bound."""
        wanted = None if names is None else set(names)
        chosen = [c for n, c in self._children.items() if wanted is None or n in wanted]
        for child in chosen:
            child.stopping = True
            child.wake.set()
            self._signal(child, signal.SIGTERM)
        tasks = [c.task for c in chosen if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout_s)
            if pending:
                for child in chosen:
                    if child.task in pending:
                        self._notice(
                            f"{child.spec.name} did not stop within {self._stop_timeout_s:g}s; "
                            "killing it"
                        )
                        self._signal(child, signal.SIGKILL)
                await asyncio.wait(pending, timeout=10)
        for child in chosen:
            self._children.pop(child.spec.name, None)

    def kill_all(self) -> None:
        """A second Ctrl-C: no more waiting."""
        for child in self._children.values():
            child.stopping = True
            child.wake.set()
            self._signal(child, signal.SIGKILL)

    @staticmethod
    def _signal(child: _Child, sig: int) -> None:
        proc = child.proc
        # Once reaped, its pid (and so its group id) may belong to someone else.
        if proc is None or proc.returncode is not None:
            return
        # The child leads its own process group (start_new_session), so its group id is
        # its pid: the signal reaches whatever it started too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
