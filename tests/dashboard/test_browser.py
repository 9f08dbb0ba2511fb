"""The dashboard in a real headless browser (Debian's chromium + chromedriver, through
Selenium): a search runs in the background while the page follows it.

Skipped, with the reason, only where the browser or Selenium is not installed
(``apt-get install chromium chromium-driver``; ``pip install 'optforge[dashboard,test]'``).
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request

import pytest

from optforge.dashboard.server import Dashboard

from .conftest import start_search, stop

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver",
)


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30.0, what: str = "the page"):
    """Poll ``condition()`` until it returns something truthy; its value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = condition()
        except Exception as e:  # the element is not there yet, or being redrawn
            last = e
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def text(driver, css: str) -> str:
    return driver.find_element("css selector", css).text


def test_watch_a_running_search(browser, tmp_path):
    journal = tmp_path / "live.db"
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)  # a header, then garbage
    search = start_search(journal)
    dashboard = Dashboard([str(journal), str(corrupt)], port=0, log=lambda m: None)
    dashboard.start()
    try:
        browser.get(dashboard.url)

        # the candidate count grows while the search runs
        def generated() -> int:
            return int(text(browser, "#journal-0 dd.generated").split("/")[0])

        first = wait_for(generated, 60, "the first candidates")
        later = wait_for(lambda: generated() > first and generated(), 40, "more candidates")
        assert later > first
        assert "running" in text(browser, "#journal-0 .badge")
        assert browser.find_element("css selector", "#journal-0 .plot .main-svg")  # plotted

        # the corrupt journal beside it says so, and the page goes on
        error = wait_for(
            lambda: text(browser, "#journal-1 .journal-error"), 10, "the corrupt one's error"
        )
        assert "corrupt.db" in error and "optforge journal" in error
        assert "error" in text(browser, "#overview-rows tr[data-journal='1']")

        # selecting a program shows its source and its lineage back to the warm start
        rows = "#journal-0 .leaderboard tbody tr[data-candidate]"
        wait_for(lambda: browser.find_elements("css selector", rows), 30, "a leaderboard row")
        row = browser.find_element("css selector", rows)
        chosen = row.get_attribute("data-candidate")
        row.click()
        source = wait_for(lambda: text(browser, "#journal-0 .program pre.source"), 15, "source")
        assert source.startswith("def train(w, g, v1, v2, lr):") and "return update" in source
        assert text(browser, "#journal-0 .candidate-title") == f"candidate {chosen}"
        steps = browser.find_elements("css selector", "#journal-0 .lineage tbody tr")
        assert steps[0].text.split()[-2:] == ["warm", "start"]
        assert steps[-1].get_attribute("data-candidate") == chosen

        # still following the search after all that
        wait_for(lambda: generated() > later, 40, "the count to keep growing")
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

        # nothing outside the named journals
        for path in ("api/journal/2", "../../etc/passwd", "static/../server.py"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(dashboard.url + path, timeout=10)
            assert refused.value.code == 404
    finally:
        dashboard.stop()
        stop(search)
