"""The dashboard as the edge serves it: the page and its modules from package data, under a
CSP that allows only this origin's files, without auth (they hold no data), revalidated by
ETag. What the page does is tested in a browser (tests/browser)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agentops.edge.dashboard import ASSETS
from tests.integration import test_edge_ws
from tests.integration.test_edge_ws import MakeClient

pytestmark = pytest.mark.integration
make_client = test_edge_ws.make_client  # the edge WebSocket tests' fixture: an app per test

UI = Path(__file__).resolve().parents[2] / "agentops" / "edge" / "ui"
MODULES = sorted(name for name in ASSETS if name.endswith(".js"))


async def test_page_and_assets_are_served_under_a_csp_without_inline_code(
    make_client: MakeClient,
) -> None:
    """GET / and every file it names are served with a CSP that allows only this origin's
    scripts and styles: no 'unsafe-inline', no eval, connections to this origin only."""
    client = await make_client()
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe" not in csp
    html = await page.text()
    assert "<script>" not in html and "style=" not in html  # nothing inline: the CSP forbids it
    named = re.findall(r'(?:href|src)="(/ui/[^"]+)"', html)
    assert "/ui/main.js" in named and "/ui/app.css" in named
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in named:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == types[Path(path).suffix], path
        assert resp.headers["Content-Security-Policy"] == csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_assets_are_revalidated_by_etag_and_unknown_ones_are_404(
    make_client: MakeClient,
) -> None:
    """A browser revalidates each file (no-cache + ETag: 304 when unchanged); a name that is
    not a dashboard file, or tries to leave the directory, is a JSON 404."""
    client = await make_client()
    first = await client.get("/ui/main.js")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"
    again = await client.get("/ui/main.js", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag
    for path in ("/ui/nope.js", "/ui/..%2Fdashboard.py", "/ui/../app.py", "/ui/"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_the_dashboard_needs_no_token_but_the_api_does(make_client: MakeClient) -> None:
    """With an API token set, the page and its files load without it (they hold no data);
    the API behind them still needs it, and a POST under /ui/ is no way around it."""
    client = await make_client(api_token="s3cret")
    assert (await client.get("/")).status == 200
    for name in ASSETS:
        assert (await client.get(f"/ui/{name}")).status == 200, name
    assert (await client.get("/tasks")).status == 401
    assert (await client.post("/ui/main.js")).status == 401


def test_modules_import_only_dashboard_files_and_are_all_preloaded() -> None:
    """Every module import names a file that is served, and the page preloads every module,
    so the browser fetches them in one round instead of a waterfall of imports."""
    html = (UI / "index.html").read_text()
    preloaded = set(re.findall(r'rel="modulepreload" href="/ui/([^"]+)"', html))
    assert preloaded == set(MODULES) - {"main.js"}
    for name in MODULES:
        source = (UI / name).read_text()
        for imported in re.findall(r'from "\./([^"]+)"', source):
            assert imported in ASSETS, (name, imported)


def test_api_data_only_ever_reaches_the_page_as_text() -> None:
    """No module builds markup from strings or evaluates code (the CSP would block eval,
    but markup from API data would be an injection): text goes through textContent."""
    for name in MODULES:
        source = (UI / name).read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in source, (name, banned)
        assert "new Function" not in source, name
        assert not re.search(r"https?://", source), name  # nothing from another origin


def test_modules_parse(tmp_path: Path) -> None:
    """Every module is valid JavaScript (checked with node as an ES module, when installed)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    for name in MODULES:
        copy = tmp_path / (name[:-3] + ".mjs")
        copy.write_text((UI / name).read_text())
        check = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
        assert check.returncode == 0, (name, check.stderr)
