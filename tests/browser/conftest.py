"""A real headless Chromium (Debian's chromium and chromium-driver, driven by selenium through the
Debian driver's path: nothing is downloaded at run time) for the admin UI's tests, and screenshots
of every page they visit under the run's temporary folder."""

import os
import shutil
import subprocess

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def _install():
    """Install Debian's chromium and chromium-driver when missing (root with apt-get, as .ci/run and a
    fresh machine are); anything else is a failure that says what to install."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True, env=env)
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("The browser tests need Debian's chromium and chromium-driver: "
                    "apt-get install chromium chromium-driver")


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
