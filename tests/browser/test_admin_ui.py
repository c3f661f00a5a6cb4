"""The admin UI in a real headless Chromium against a real gunicorn + gevent gateway (SQLite and
PostgreSQL), called with the real `openai` SDK: an admin signs in, creates a key with a budget,
sees it listed, calls the gateway with it, sees the call in Logs and its cost in Usage, blocks the
key and sees the next call refused, signs out. A team admin and a viewer do the same and see only
what they may. Markup in names renders as text in the DOM; a form posted from another origin
changes nothing; no page logs a JavaScript console error. Every page visited is screenshotted."""

import http.server
import re
import threading
import time

import openai
import pytest
import requests
from selenium.common.exceptions import NoSuchElementException
from selenium.common.exceptions import StaleElementReferenceException
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import config_gateway
from tests.pg import schema_url as pg_schema

MASTER = "sk-master-browser-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
PRICED = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
WAIT = 15


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gateway(request, upstream, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"ui-{request.param}")
    config = {"model_list": [{"model_name": "gpt-3.5-turbo", "litellm_params": {
                  "model": "openai/gpt-3.5-turbo", "api_base": upstream.url + "/v1", "api_key": upstream.api_key,
                  **PRICED}}],
              "general_settings": {"master_key": MASTER}}
    if request.param == "postgresql":
        with pg_schema() as url:
            config["general_settings"]["database_url"] = url
            gw = config_gateway(folder, config)
            yield gw
            gw.stop()
    else:
        gw = config_gateway(folder, config, env={"DATABASE_URL": f"sqlite:///{folder / 'gateway.sqlite'}"})
        yield gw
        gw.stop()


@pytest.fixture
def browser(browser_factory, screenshots, request):
    driver = browser_factory()
    driver.delete_all_cookies()
    driver.shots = []
    yield driver
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE" and not refusal(entry)]
    driver.delete_all_cookies()
    assert not errors, f"JavaScript console errors: {errors}"


def refusal(entry):
    """A page answered with its HTTP status (a 403 page saying what the role may not do): Chromium logs
    the status of every document; scripts, styles and the console's own errors are never excused."""
    url = entry["message"].split(" ", 1)[0]
    return entry["source"] == "network" and "/ui/" in url and "/ui/static/" not in url


def submit(driver, element):
    """Click a button that submits a form, and wait for the answer's page."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            page.tag_name  # raises once the old page is gone
        except WebDriverException:  # stale, or "does not belong to the document"
            return
        time.sleep(0.02)
    raise AssertionError("the form's answer did not load")


def admin(gateway, method, path, **kwargs):
    answer = requests.request(method, gateway.url + path, headers=ADMIN, timeout=30, **kwargs)
    assert answer.status_code == 200, answer.text
    return answer.json()


def shot(driver, screenshots, name):
    driver.save_screenshot(str(screenshots / f"{name}.png"))


def open_page(driver, gateway, path, screenshots=None, name=None):
    driver.get(gateway.url + path)
    if screenshots is not None:
        shot(driver, screenshots, name)


def sign_in(driver, gateway, key):
    driver.get(gateway.url + "/ui/login")
    driver.find_element(By.ID, "key").send_keys(key)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "#login-key button"))
    wait_for(lambda: "/ui/keys" in driver.current_url, "the Keys page after sign-in")


def sign_out(driver):
    submit(driver, driver.find_element(By.ID, "sign-out"))
    wait_for(lambda: "/ui/login" in driver.current_url, "the sign-in page after sign-out")


def wait_for(condition, what, timeout=WAIT):
    """Poll `condition` (a page being replaced under it counts as not yet) until true."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (StaleElementReferenceException, NoSuchElementException, AttributeError):
            pass
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.05)


def row_of(driver, alias):
    """The Keys table row whose alias cell says `alias` (as text)."""
    for row in driver.find_elements(By.CSS_SELECTOR, "#keys tbody tr"):
        cells = row.find_elements(By.CSS_SELECTOR, "td.alias")
        if cells and cells[0].text == alias:
            return row
    return None


def create_key(driver, **fields):
    if driver.find_element(By.ID, "new-key-form").get_attribute("open") is None:
        driver.find_element(By.CSS_SELECTOR, "#new-key-form summary").click()
    for name, value in fields.items():
        box = driver.find_element(By.ID, f"f-{name}")
        box.clear()
        box.send_keys(value)
    submit(driver, driver.find_element(By.ID, "create"))


def message(driver):
    found = driver.find_elements(By.ID, "message")
    return found[0].text if found else None


def chat(gateway, key, text="hello"):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    return client.with_raw_response.chat.completions.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": text}])


def user_key(gateway, user_id, role="internal_user", team=None, team_role="user", **key_fields):
    admin(gateway, "POST", "/user/new", json={"user_id": user_id, "user_role": role})
    if team is not None:
        requests.post(gateway.url + "/team/new", json={"team_id": team}, headers=ADMIN, timeout=30)
        admin(gateway, "POST", "/team/member_add", json={"team_id": team, "member": {"user_id": user_id,
                                                                                       "role": team_role}})
    return admin(gateway, "POST", "/key/generate", json={"user_id": user_id, "key_alias": f"{user_id}-key",
                                                          **key_fields})["key"]


def test_an_admin_creates_uses_sees_blocks_a_key_and_signs_out(gateway, browser, screenshots):
    suffix = gateway.url.rsplit(":", 1)[1]
    sign_in(browser, gateway, MASTER)
    shot(browser, screenshots, f"{suffix}-keys-empty")
    create_key(browser, key_alias="browser-key", max_budget="0.5", models="gpt-3.5-turbo")
    new_key = browser.find_element(By.ID, "new-key").text
    assert new_key.startswith("sk-") and row_of(browser, "browser-key") is not None
    browser.find_element(By.ID, "copy-key").click()
    wait_for(lambda: browser.find_element(By.ID, "copy-key").text in ("Copied", "Select and copy"), "the copy button")
    shot(browser, screenshots, "keys")
    # The key works with the openai SDK; its call shows in Logs, with its cost, and in Usage.
    raw = chat(gateway, new_key)
    request_id = raw.headers["x-request-id"]

    def logged():
        browser.get(gateway.url + "/ui/logs")
        return request_id[:12] in browser.find_element(By.ID, "logs").text
    wait_for(logged, "the call in Logs")
    shot(browser, screenshots, "logs")
    browser.find_element(By.LINK_TEXT, request_id[:12]).click()
    cost = browser.find_element(By.ID, "log-cost").text
    assert cost.startswith("$") and float(cost[1:]) > 0
    shot(browser, screenshots, "log-row")
    open_page(browser, gateway, "/ui/usage?by=key", screenshots, "usage")
    rows = {r.find_element(By.CSS_SELECTOR, "td.label").text: r.find_element(By.CSS_SELECTOR, "td.cost").text
            for r in browser.find_elements(By.CSS_SELECTOR, "#usage tbody tr") if r.find_elements(By.CSS_SELECTOR, "td.label")}
    assert rows.get("browser-key") == cost
    assert browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
    for name in ("teams", "users", "organizations", "models", "health", "settings"):  # each page, no console error
        open_page(browser, gateway, f"/ui/{name}", screenshots, name)
        assert browser.find_element(By.TAG_NAME, "h1").text and message(browser) is None, name
    # Block it: the next call is refused.
    open_page(browser, gateway, "/ui/keys")
    submit(browser, row_of(browser, "browser-key").find_element(By.CSS_SELECTOR, "button.block"))
    wait_for(lambda: row_of(browser, "browser-key").find_element(By.CSS_SELECTOR, "td.state").text == "blocked",
             "the key shown blocked")
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, new_key)
    # The key itself is on no page any more: only its hint.
    assert new_key not in browser.page_source and f"sk-...{new_key[-4:]}" in browser.page_source
    token = browser.get_cookie("gateway_ui")
    assert token["httpOnly"] and token["sameSite"] == "Strict"
    sign_out(browser)
    shot(browser, screenshots, "login")
    open_page(browser, gateway, "/ui/keys")
    assert "/ui/login" in browser.current_url


def test_a_team_admin_manages_its_teams_keys_and_sees_nothing_else(gateway, browser, screenshots):
    tag = gateway.url.rsplit(":", 1)[1]
    admin_key = user_key(gateway, f"ta{tag}", team=f"t1-{tag}", team_role="admin")
    member_key = user_key(gateway, f"tm{tag}", team=f"t1-{tag}", team_id=f"t1-{tag}")
    user_key(gateway, f"ot{tag}", team=f"t2-{tag}", team_id=f"t2-{tag}")
    sign_in(browser, gateway, admin_key)
    listed = browser.find_element(By.ID, "keys").text
    assert f"tm{tag}-key" in listed and f"ta{tag}-key" in listed and f"ot{tag}-key" not in listed
    create_key(browser, key_alias=f"made-by-ta{tag}", team_id=f"t1-{tag}", user_id=f"tm{tag}")
    assert browser.find_element(By.ID, "new-key").text.startswith("sk-")
    submit(browser, row_of(browser, f"tm{tag}-key").find_element(By.CSS_SELECTOR, "button.block"))
    wait_for(lambda: row_of(browser, f"tm{tag}-key").find_element(By.CSS_SELECTOR, "td.state").text == "blocked",
             "the team member's key shown blocked")
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway, member_key)
    # Another team is out of reach, even by a typed-in team id.
    create_key(browser, key_alias="elsewhere", team_id=f"t2-{tag}")
    assert "team" in (message(browser) or ""), browser.page_source
    assert row_of(browser, "elsewhere") is None
    shot(browser, screenshots, "keys-team-admin")
    open_page(browser, gateway, "/ui/usage")
    assert "may not call this route" in message(browser)
    sign_out(browser)


def test_a_viewer_reads_and_changes_nothing(gateway, browser, screenshots):
    tag = gateway.url.rsplit(":", 1)[1]
    admin(gateway, "POST", "/key/generate", json={"key_alias": f"seen-by-viewer{tag}"})
    viewer_key = user_key(gateway, f"vw{tag}", role="proxy_admin_viewer")
    sign_in(browser, gateway, viewer_key)
    assert row_of(browser, f"seen-by-viewer{tag}") is not None
    submit(browser, row_of(browser, f"seen-by-viewer{tag}").find_element(By.CSS_SELECTOR, "button.block"))
    wait_for(lambda: message(browser) is not None, "the refusal")
    assert "may not call this route" in message(browser)
    open_page(browser, gateway, "/ui/keys")
    assert row_of(browser, f"seen-by-viewer{tag}").find_element(By.CSS_SELECTOR, "td.state").text == "active"
    create_key(browser, key_alias="viewer-made")
    assert "may not call this route" in message(browser) and row_of(browser, "viewer-made") is None
    open_page(browser, gateway, "/ui/usage", screenshots, "usage-viewer")
    assert message(browser) is None
    sign_out(browser)


def test_markup_in_names_renders_as_text(gateway, browser, screenshots):
    tag = gateway.url.rsplit(":", 1)[1]
    team = f"x{tag}"
    admin(gateway, "POST", "/team/new", json={"team_id": team, "team_alias": XSS})
    key = admin(gateway, "POST", "/key/generate", json={"key_alias": XSS, "team_id": team,
                                                        "metadata": {"note": XSS}})["key"]
    chat(gateway, key, text=XSS)
    sign_in(browser, gateway, MASTER)
    assert row_of(browser, XSS) is not None  # the alias cell's text is the markup itself
    assert browser.execute_script("return window.__xss") is None
    token = row_of(browser, XSS).get_attribute("data-token")
    open_page(browser, gateway, f"/ui/keys/{token}", screenshots, "key-detail")
    assert browser.find_element(By.ID, "f-metadata").get_attribute("value") == '{"note": "%s"}' % XSS.replace('"', '\\"')
    assert browser.find_element(By.ID, "f-key_alias").get_attribute("value") == XSS

    def in_usage():
        browser.get(gateway.url + "/ui/usage?by=team")
        return XSS in [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#usage td.label")]
    wait_for(in_usage, "the team's alias in Usage")
    assert browser.execute_script("return window.__xss") is None
    sign_out(browser)


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another origin's page that posts a form to the gateway as soon as it loads."""

    target = None

    def do_GET(self):  # noqa: N802
        page = (f'<form id="f" method="post" action="{self.target}"><input name="csrf" value="guess"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args):
        pass


def test_a_form_from_another_origin_changes_nothing(gateway, browser):
    tag = gateway.url.rsplit(":", 1)[1]
    info = admin(gateway, "POST", "/key/generate", json={"key_alias": f"target{tag}"})
    sign_in(browser, gateway, MASTER)
    _Attacker.target = f"{gateway.url}/ui/keys/{info['token']}/block"
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.2:{server.server_address[1]}/")
        wait_for(lambda: browser.current_url.startswith(gateway.url), "the forged form's answer")
        assert re.search(r"/ui/(login|keys)", browser.current_url)
    finally:
        server.shutdown()
    # SameSite=Strict kept the cookie home, and the CSRF token and origin check refuse it anyway.
    assert admin(gateway, "GET", "/key/info", params={"key": info["token"]})["info"]["blocked"] is False
    browser.get_log("browser")  # the forged post's 403 is the attacker's console error, not a page's
    open_page(browser, gateway, "/ui/keys")
    assert row_of(browser, f"target{tag}").find_element(By.CSS_SELECTOR, "td.state").text == "active"
