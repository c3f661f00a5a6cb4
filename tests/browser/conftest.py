"""A real headless Chromium (Debian's chromium and chromium-driver, driven by selenium through the
Debian driver's path: nothing is downloaded at run time) for the admin UI's tests, and screenshots
of every page they visit under the run's temporary folder."""

import pytest

from tests.debian import ensure

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _install():
    ensure(("chromium", "chromium-driver"), (CHROMIUM, CHROMEDRIVER))


@pytest.fixture(scope="session")
def browser_factory():
    """new() -> a headless Chromium WebDriver (closed at the end of the session)."""
    _install()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    drivers = []

    def new():
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield new
    for driver in drivers:
        try:
            driver.quit()
        except Exception:  # noqa: BLE001  (a browser that already died)
            pass


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    """The folder every page's screenshot goes to (printed at the end of the run)."""
    folder = tmp_path_factory.mktemp("ui-screenshots")
    yield folder
    print(f"\nadmin UI screenshots: {folder}")
