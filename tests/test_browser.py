"""The browser harness: a headless chromium reads pages of a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from monitor.errors import DependencyError
from monitor.harness import browser as browser_module
from monitor.harness.browser import Browser, basic_auth_header

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SCRIPTED = """<!doctype html>
<html><head><title>scripted</title></head>
<body><h1>served</h1>
<script>
window.addEventListener("load", () => setTimeout(() => {
  const p = document.createElement("p");
  p.id = "added";
  p.dataset.by = "script";
  p.textContent = "added after load";
  document.body.append(p);
}, 50));
</script></body></html>
"""


@dataclass
class Site:
    url: str
    headers: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # path -> each request's, lower-case names

    def seen(self, path: str) -> list[dict[str, str]]:
        return self.headers.get(path, [])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """An aiohttp server on a free loopback port, on its own event loop thread: a page whose
    script adds an element, one behind a bearer token, one behind basic auth; 404 elsewhere."""
    recorded = Site(url="")

    @web.middleware
    async def record(request: web.Request, handler):
        recorded.headers.setdefault(request.path, []).append({k.lower(): v for k, v in request.headers.items()})
        return await handler(request)

    async def scripted(request: web.Request) -> web.Response:
        return web.Response(text=SCRIPTED, content_type="text/html")

    async def bearer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t0k":
            return web.Response(status=401, text="<p id=denied>token needed</p>", content_type="text/html")
        return web.Response(text="<p id=secret>bearer ok</p>", content_type="text/html")

    async def basic(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_auth_header("ops", "pa:ss")["Authorization"]:
            return web.Response(
                status=401,
                text="<p id=denied>login needed</p>",
                content_type="text/html",
                headers={"WWW-Authenticate": 'Basic realm="saemon"'},
            )
        return web.Response(text="<p id=secret>basic ok</p>", content_type="text/html")

    app = web.Application(middlewares=[record])
    app.router.add_get("/scripted", scripted)
    app.router.add_get("/bearer", bearer)
    app.router.add_get("/basic", basic)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    recorded.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    thread = threading.Thread(target=loop.run_forever, name="test-site", daemon=True)
    thread.start()
    try:
        yield recorded
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.mark.browser
def test_the_dom_is_read_after_the_pages_javascript_ran(browser: Browser, site: Site):
    browser.open(f"{site.url}/scripted")
    assert browser.wait_for("#added").text == "added after load"
    assert browser.text("h1") == "served"
    assert browser.attribute("#added", "data-by") == "script"
    assert [p.text for p in browser.find_all("p")] == ["added after load"]
    assert browser.execute("return document.title") == "scripted"
    assert 'id="added"' in browser.page_source
    assert browser.status() == 200


@pytest.mark.browser
def test_a_page_behind_a_bearer_token_is_401_without_it_and_200_with_it(browser: Browser, site: Site):
    browser.open(f"{site.url}/bearer")
    assert browser.status() == 401
    assert browser.text("#denied") == "token needed"

    browser.open(f"{site.url}/bearer", headers={"Authorization": "Bearer t0k", "X-Request-Id": "ui-1"})
    assert browser.status() == 200
    assert browser.text("#secret") == "bearer ok"
    last = site.seen("/bearer")[-1]
    assert last["authorization"] == "Bearer t0k"
    assert last["x-request-id"] == "ui-1"  # chromium sends it as X-Request-ID


@pytest.mark.browser
def test_a_page_behind_basic_auth_is_401_without_credentials_and_200_with_them(browser: Browser, site: Site):
    browser.open(f"{site.url}/basic")
    assert browser.status() == 401
    # A Basic challenge makes chromium show its login prompt instead of the 401 body; headless,
    # that is an empty document (and the next open works as usual).
    assert browser.find_all("#denied") == []

    browser.open(f"{site.url}/basic", headers=basic_auth_header("ops", "pa:ss"))
    assert browser.status() == 200
    assert browser.text("#secret") == "basic ok"


@pytest.mark.browser
def test_the_headers_of_one_page_are_not_sent_with_the_next(browser: Browser, site: Site):
    browser.open(f"{site.url}/bearer", headers={"Authorization": "Bearer t0k"})
    browser.open(f"{site.url}/bearer")
    assert "authorization" not in site.seen("/bearer")[-1]
    assert browser.status() == 401


@pytest.mark.browser
def test_the_status_of_a_missing_page_is_404(browser: Browser, site: Site):
    browser.open(f"{site.url}/no/such/page")
    assert browser.status() == 404


@pytest.mark.browser
def test_a_screenshot_is_a_png_file_of_the_window(browser: Browser, site: Site, tmp_path):
    browser.open(f"{site.url}/scripted")
    browser.wait_for("#added")
    path = browser.screenshot(tmp_path / "shots" / "scripted.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width = int.from_bytes(data[16:20], "big")  # the IHDR chunk: width, then height
    assert width == 1280


def test_a_missing_chromedriver_is_an_error_that_names_the_fix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(browser_module.shutil, "which", lambda name: None if name == "chromedriver" else name)
    with pytest.raises(DependencyError, match=r"apt-get install chromium chromium-driver"):
        Browser().start()
