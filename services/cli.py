"""The ``sync-airbnb`` console script: one sub-command per service or operator task.

Each sub-command's module is imported only when it runs, so ``--help`` stays
fast and one service never pays for another's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Command:
    help: str
    # "module:function" taking the parsed argparse.Namespace and returning an exit code.
    target: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _simulator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--accounts", type=int, default=3, help="number of simulated accounts")
    p.add_argument("--listings", type=int, default=4, help="listings per account")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the session state across restarts in DIR (default: SIM_STATE_DIR, or memory)",
    )
    p.add_argument(
        "--tls-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="serve HTTPS with a throwaway certificate written to DIR/cert.pem and DIR/key.pem",
    )


def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("account_id")
    p.add_argument("--full", action="store_true", help="re-fetch the first-run window")
    p.add_argument("--wait", action="store_true", help="show progress until the job ends")


def _keys_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="make a key and print it once")
    create.add_argument("--name", required=True, help="what the key is called (unique)")
    create.add_argument(
        "--scope", required=True, metavar="SCOPE", help="admin, read or customer:<customer id>"
    )
    listing = sub.add_parser("list", help="every key: name, scope, created, revoked, last used")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    revoke = sub.add_parser("revoke", help="revoke the key in force with this name")
    revoke.add_argument("name")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exit", action="store_true", help="stop after the report")


COMMANDS: dict[str, Command] = {
    "migrate": Command(
        "apply the database migrations (safe to run twice, or at once)", "shared.migrate:main"
    ),
    "admin": Command("run the admin HTTP API", "services.admin.app:main"),
    "scheduler": Command(
        "run the scheduler (daily runs, backfills, manual triggers)", "services.scheduler.app:main"
    ),
    "fetcher": Command("run one fetcher replica (talks to Airbnb)", "services.fetcher.app:main"),
    "writer": Command(
        "run one writer replica (writes metrics to PostgreSQL)", "services.writer.app:main"
    ),
    "simulator": Command(
        "run the Airbnb simulator", "services.simulator.app:main", _simulator_args
    ),
    "up": Command("run every service in one process tree", "services.launcher.up:main"),
    "demo": Command(
        "embedded infrastructure, simulator, demo accounts, backfill, report",
        "services.launcher.demo:main",
        _demo_args,
    ),
    "sync": Command(
        "trigger a sync of one account", "services.launcher.sync_command:main", _sync_args
    ),
    "rotate-keys": Command(
        "re-encrypt every stored credential under the first SECRET_KEYS key",
        "services.admin.rotate_keys:main",
    ),
    "keys": Command(
        "the admin's API keys: create (printed once), list, revoke",
        "services.admin.keys:main",
        _keys_args,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sync-airbnb",
        description="Sync Airbnb host insights into PostgreSQL over NATS JetStream.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if cmd.add_arguments:
            cmd.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd = COMMANDS[args.command]
    module_name, func_name = cmd.target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
