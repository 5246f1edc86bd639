"""The dashboard at ``/ui/``: one page over the read API, its charts drawn by plotly.js.

Every file comes from installed packages, so nothing is fetched from elsewhere: the page,
its script and stylesheet from this package's ``ui/`` folder (package data in
pyproject.toml), ``plotly.min.js`` from the ``plotly`` wheel's own package data (the
bundle the Python library embeds in its HTML exports). The page's Content-Security-Policy
tells the browser the same: scripts, styles, images and API calls from this origin only.

The page and its files are public: they hold no data. The page asks for an API key and
sends it with every API call, which the key middleware checks as for any client.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

UI_PATH = "/ui/"
UI_STATIC = "/ui/static"
UI_DIR = Path(__file__).parent / "ui"
UI_ASSETS = ("app.js", "app.css", "plotly.min.js")

# plotly.js puts inline styles on what it draws (and a <style> for its mode bar), hence
# 'unsafe-inline' for styles, and nothing else inline; the page's icon is a data: URL.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def plotly_js() -> Path:
    """plotly.min.js from the installed ``plotly`` package, found without importing it
    (the Python library's import is heavy, and only its bundle is needed)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed (a dependency of sync-airbnb)")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def asset_paths() -> dict[str, Path]:
    files = {name: UI_DIR / name for name in UI_ASSETS if name != "plotly.min.js"}
    files["plotly.min.js"] = plotly_js()
    return files


def public_paths() -> tuple[str, ...]:
    return ("/ui", UI_PATH, *(f"{UI_STATIC}/{name}" for name in UI_ASSETS))


async def ui_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        UI_DIR / "index.html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
    )


async def _to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(UI_PATH)


def setup_assets(app: web.Application) -> None:
    """The page's files (no operations of the API, so not in the document), one route each:
    only these files are served, not the folders they sit in."""
    app.router.add_get("/ui", _to_ui, allow_head=True)
    for name, path in asset_paths().items():

        async def serve(request: web.Request, path: Path = path) -> web.FileResponse:
            return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

        app.router.add_get(f"{UI_STATIC}/{name}", serve, allow_head=True)
