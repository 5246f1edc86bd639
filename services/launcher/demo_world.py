"""The demo's Airbnb: the simulator with a listing count per account.

``python -m services.launcher.demo_world --port P --seed S --listings 4,6,7``
serves the simulator's application (:func:`services.simulator.app.create_app`)
over a world of ``len(--listings)`` accounts, the i-th with ``listings[i]``
listings. The world is built as ``sync-airbnb simulator --accounts N
--listings max(...)`` builds it and then trimmed, so ids, cookies and data are
the simulator's own for that seed, and the same on every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from aiohttp import web

from services.simulator.app import create_app
from services.simulator.data import World, build_world
from shared.logs import setup_logging
from shared.settings import BaseServiceSettings, load_settings

DEMO_LISTINGS = (4, 6, 7)


def demo_world(listings: Sequence[int], seed: int) -> World:
    full = build_world(len(listings), max(listings, default=0), seed)
    accounts = tuple(
        dataclasses.replace(account, listings=account.listings[:n])
        for account, n in zip(full.accounts, listings, strict=True)
    )
    return World(seed, accounts)


def parse_listings(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("give listing counts >= 1, comma-separated")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.launcher.demo_world")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--listings", type=parse_listings, default=DEMO_LISTINGS)
    args = parser.parse_args(argv)
    settings = load_settings(BaseServiceSettings, "simulator")
    setup_logging("simulator", settings.log_level)
    pinned = settings.sync_airbnb_today
    app = create_app(
        demo_world(args.listings, args.seed), today=(lambda: pinned) if pinned else None
    )

    async def announce(_: web.Application) -> None:
        print(f"simulator listening on http://{args.host}:{args.port}", flush=True)

    app.on_startup.append(announce)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
