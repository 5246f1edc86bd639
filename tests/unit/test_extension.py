"""The browser extension's static rules (extension/): its manifest asks for what it needs
and no more, and it keeps the same auth group as the server (shared/airbnb/cookies.py).
The extension in a real browser is tests/system/test_extension_browser.py's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.airbnb.cookies import AUTH_COOKIES

EXTENSION = Path(__file__).resolve().parents[2] / "extension"


def manifest() -> dict[str, object]:
    return json.loads((EXTENSION / "manifest.json").read_text())


def test_the_manifest_asks_only_for_what_the_extension_needs() -> None:
    m = manifest()
    assert m["manifest_version"] == 3
    assert m["permissions"] == ["cookies", "storage"]
    # The two hosts whose cookies a logged-in host holds (.airbnb.com cookies are read
    # through airbnb.com), nothing else at install time.
    assert m["host_permissions"] == ["https://www.airbnb.com/*", "https://airbnb.com/*"]
    # The server is asked for at run time (options.js), whatever its address.
    assert m["optional_host_permissions"] == ["https://*/*", "http://*/*"]
    (script,) = m["content_scripts"]  # type: ignore[misc]
    assert script["matches"] == ["https://www.airbnb.com/hosting/*"]
    assert "externally_connectable" not in m and "web_accessible_resources" not in m


def test_the_extension_keeps_the_servers_auth_group() -> None:
    source = (EXTENSION / "background.js").read_text()
    block = re.search(r"const AUTH_COOKIES = \[(.*?)\];", source, re.S)
    assert block is not None
    assert tuple(re.findall(r'"([^"]+)"', block.group(1))) == AUTH_COOKIES


def test_no_part_of_the_extension_stores_a_cookie() -> None:
    for path in EXTENSION.glob("*.js"):
        for call in re.findall(r"chrome\.storage\.\w+\.set\((.*?)\)", path.read_text(), re.S):
            assert call.strip() == "{ server, token }", (path.name, call)
        assert "localStorage" not in path.read_text() and "indexedDB" not in path.read_text()
