"""A headless chromium for the tests of the sidecar's web pages (``/ui/``).

Debian's ``chromium`` driven by its ``chromedriver`` (package ``chromium-driver``) through
Selenium. Both binaries are named explicitly, so Selenium Manager never runs (it would
download a driver: there is no network at test time). Tests read the DOM after the page's
JavaScript ran, the HTTP status of the page, and save screenshots; pages behind a bearer
token or HTTP basic auth are loaded by sending the ``Authorization`` header with every request.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from monitor.errors import DependencyError, SaemonError

# Debian's /usr/bin/chromium is a shell wrapper that adds flags from /etc/chromium.d (GPU
# rasterization, extensions) and trips over a stacked /dev/shm mount; the binary it execs
# takes exactly the flags given here.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium")
INSTALL_HINT = "apt-get install chromium chromium-driver (or `make setup`)"


def chromium_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed, else None."""
    chromium = next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    chromedriver = shutil.which("chromedriver")
    return (chromium, chromedriver) if chromium and chromedriver else None


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    """The ``Authorization`` header of HTTP basic auth, for ``Browser.open(url, headers=...)``."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


class Browser:
    """One headless chromium with a temporary profile; ``with Browser() as browser: ...``.

    Start it once per test session and reuse it: starting takes about a second, a page load
    a fraction of one. ``open`` replaces the extra headers of the previous page.
    """

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.size = (width, height)
        self._driver: webdriver.Chrome | None = None
        self._profile: Path | None = None
        self._status: int | None = None

    def start(self) -> Browser:
        binaries = chromium_binaries()
        if binaries is None:
            raise DependencyError(f"chromium or chromedriver is not installed: {INSTALL_HINT}")
        chromium, chromedriver = binaries
        self._profile = Path(tempfile.mkdtemp(prefix="saemon-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (
            "--headless=new",
            "--no-sandbox",  # chromium's sandbox refuses to run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers have a small /dev/shm
            f"--window-size={self.size[0]},{self.size[1]}",
            f"--user-data-dir={self._profile}",
        ):
            options.add_argument(flag)
        # The performance log carries the DevTools Network events: the status of each page.
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        try:
            self._driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        except BaseException:
            shutil.rmtree(self._profile)
            self._profile = None
            raise
        self._driver.execute_cdp_cmd("Network.enable", {})
        return self

    def stop(self) -> None:
        """Quit chromium and remove its profile; idempotent."""
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.quit()
        if self._profile is not None:
            shutil.rmtree(self._profile)
            self._profile = None

    @property
    def driver(self) -> webdriver.Chrome:
        if self._driver is None:
            raise SaemonError("the browser is not started: call Browser.start() or use it as a context manager")
        return self._driver

    def open(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        """Load ``url`` (until its load event), sending ``headers`` with every request of the page.

        A 401 with a ``WWW-Authenticate: Basic`` challenge leaves an empty document (chromium
        would show its login prompt); send ``basic_auth_header(...)`` to get past it.
        """
        self.driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": dict(headers or {})})
        self.driver.get_log("performance")  # drop the events of earlier pages
        self._status = None
        self.driver.get(url)

    def status(self) -> int:
        """The HTTP status of the last top-level document (after redirects) that was loaded."""
        frame = self.driver.execute_cdp_cmd("Page.getFrameTree", {})["frameTree"]["frame"]["id"]
        for entry in self.driver.get_log("performance"):
            event = json.loads(entry["message"])["message"]
            params = event.get("params", {})
            if (
                event.get("method") == "Network.responseReceived"
                and params.get("type") == "Document"
                and params.get("frameId") == frame
            ):
                self._status = int(params["response"]["status"])
        if self._status is None:
            raise SaemonError(f"no HTTP response was seen for {self.driver.current_url} (a data: or file: URL?)")
        return self._status

    def wait_for(self, css: str, timeout: float = 10) -> WebElement:
        """The first element matching ``css`` once it exists (e.g. after the page's JavaScript added it)."""
        return WebDriverWait(self.driver, timeout).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)),
            message=f"no element matches {css!r} on {self.driver.current_url} after {timeout} s",
        )

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The rendered text of the first element matching ``css`` (waits for it)."""
        return self.wait_for(css).text

    def attribute(self, css: str, name: str) -> str | None:
        """Attribute (or DOM property) ``name`` of the first element matching ``css`` (waits for it)."""
        return self.wait_for(css).get_attribute(name)

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` as a function body in the page; returns what it returns."""
        return self.driver.execute_script(script, *args)

    def screenshot(self, path: Path) -> Path:
        """Save the visible page as a PNG file at ``path`` (parent folders created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise SaemonError(f"chromium could not write a screenshot to {path}")
        return path

    @property
    def page_source(self) -> str:
        """The current DOM serialised as HTML (after scripts ran, unlike the served source)."""
        return self.driver.page_source

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
