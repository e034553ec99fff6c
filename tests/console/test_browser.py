"""The console in a real browser: Debian's Chromium, headless, driven by
Selenium through Debian's chromedriver (nothing is downloaded), against the
console ``scepline up`` serves and the one ``scepline admin-api`` serves beside
the pipeline on RabbitMQ + PostgreSQL.

An operator logs in with a token; sees a request get stuck when Intune fails
(the simulator answers 500), finds it among the dead letters, replays it and
sees it issued; finds a certificate by device name, revokes it and sees it on
the next CRL. Without a token there is only the login page, and a form posted
without its CSRF token is refused.

On ``scepline up`` the tests save what they see as ``docs/console/*.png``
(``docs/console.md`` shows them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from scepline_devtools.intune_sim import Route
from scepline_shared.scep import PkiStatus
from tests.console.conftest import Deployment

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
# A laptop's screen.
WINDOW = (1366, 900)


def chromium(*, javascript: bool = True) -> WebDriver:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = (
            "Debian's chromium and chromium-driver are not installed (scripts/test installs them)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The browser on one deployment's console."""

    def __init__(self, driver: WebDriver, deployment: Deployment) -> None:
        self.driver = driver
        self.deployment = deployment
        self.url = deployment.admin_url
        driver.delete_all_cookies()

    def open(self, path: str) -> None:
        self.driver.get(f"{self.url}{path}")

    def wait(self, what: str, condition: object, timeout: float = 30) -> object:
        # The page may change under a check (the form's answer arriving).
        return WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.25,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(
            condition,  # type: ignore[arg-type]
            message=f"timed out waiting for {what}",
        )

    def text(self, selector: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, selector).text)

    def page(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "main").text)

    def log_in(self, role: str = "operator", token: str | None = None) -> None:
        self.open("/login")
        [password] = self.driver.find_elements(By.CSS_SELECTOR, "input[type=password]")
        password.send_keys(token or self.deployment.tokens[role])
        self.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.wait("the login", lambda d: "/login" not in d.current_url)

    def reload_until(self, what: str, check: object, timeout: float = 60) -> None:
        def reloaded(driver: WebDriver) -> bool:
            driver.refresh()
            return bool(check(driver))  # type: ignore[operator]

        WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=1,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(reloaded, message=f"timed out waiting for {what}")

    def screenshot(self, name: str) -> None:
        """On ``scepline up`` only: one set of pictures for the documentation."""
        if self.deployment.kind != "up":
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        # The whole page, as wide as a laptop's screen (at most 2400 pixels high).
        self.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
            "Emulation.setDeviceMetricsOverride",
            {
                "width": WINDOW[0],
                "height": max(WINDOW[1] - 130, min(height, 2400)),
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        try:
            assert self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        finally:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]


@pytest.fixture
def console(browser: WebDriver, console_deployment: Deployment) -> Console:
    return Console(browser, console_deployment)


def test_without_a_token_there_is_only_the_login_page(console: Console):
    for path in ("/", "/dead-letters", "/certificates/1f/revoke"):
        console.open(path)
        assert "/login?next=" in console.driver.current_url, path

    password_fields = console.driver.find_elements(By.CSS_SELECTOR, "input[type=password]")
    assert len(password_fields) == 1
    console.screenshot("login")
    password_fields[0].send_keys("sctok_1_not-the-token")
    console.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    console.wait("the refusal", lambda d: "failed=1" in d.current_url)
    assert "That token is not valid" in console.page()


def test_a_request_stuck_in_an_intune_outage_is_replayed_from_the_dead_letter_page(
    console: Console,
):
    deployment = console.deployment
    label = f"laptop-stuck-{deployment.kind}"
    for device in range(3):  # a few certificates in the dashboard's figures
        deployment.issued(f"laptop-{device}-{deployment.kind}")
    console.log_in("operator")
    deployment.sim.add_fault(Route.VALIDATE_REQUEST, "internal_error", count=100_000)
    try:
        assert deployment.enrol(label).status is PkiStatus.PENDING
        deployment.wait_for("the dead letter", lambda: deployment.parked(f"tx-{label}"))
        console.open("/")
        console.reload_until(
            "the dashboard to show the dead letter and Intune failing",
            lambda d: (
                int(console.text("#dead-letters-waiting")) >= 1
                and "failing" in console.text("#intune-card")
            ),
        )
        console.screenshot("dashboard")
    finally:
        deployment.sim.clear_faults()

    console.open("/dead-letters")
    row = console.driver.find_element(
        By.XPATH, f"//table[@id='dead-letters']//tr[td/a[text()='tx-{label}']]"
    )
    assert "waiting" in row.text and "validate" in row.text
    console.screenshot("dead-letters")
    row.find_element(By.LINK_TEXT, "Replay…").click()
    assert "Replay dead letter?" in console.page()
    console.screenshot("replay-confirmation")
    console.driver.find_element(By.ID, "confirm").click()
    console.wait("the replay", lambda d: "done=replayed" in d.current_url)
    assert "replayed: its request is the pipeline's again" in console.page()

    console.open(f"/requests/tx-{label}")
    console.reload_until(
        "the replayed request to be issued", lambda d: console.text("#request-state") == "ISSUED"
    )
    history = console.text("#history")
    assert "replayed by token" in history and "'pki operator' (operator)" in history
    console.screenshot("request")
    console.open("/requests?state=ISSUED")
    assert f"tx-{label}" in console.text("#requests")
    console.screenshot("requests")


def test_a_certificate_found_by_device_name_is_revoked_and_on_the_next_crl(console: Console):
    deployment = console.deployment
    label = f"kiosk-17-{deployment.kind}"
    serial = format(deployment.issued(label).certificates[0].serial_number, "x")
    console.log_in("operator")

    console.open("/certificates")
    search = console.driver.find_element(By.ID, "q")
    search.send_keys(label.upper())
    search.submit()
    console.wait("the results", lambda d: d.find_elements(By.ID, "certificates"))
    assert f"CN={label}" in console.text("#certificates")
    console.screenshot("certificates")
    console.driver.find_element(By.LINK_TEXT, serial).click()
    assert console.text("#certificate-status") == "valid"
    console.screenshot("certificate")

    console.driver.find_element(By.ID, "revoke").click()
    Select(console.driver.find_element(By.ID, "reason")).select_by_value("key-compromise")
    console.screenshot("revoke-confirmation")
    console.driver.find_element(By.ID, "confirm").click()
    console.wait("the revocation", lambda d: "done=revoked" in d.current_url)
    assert console.text("#certificate-status") == "revoked"
    assert "key-compromise" in console.page()
    assert "'pki operator' (operator)" in console.text("#certificate-actions")

    def on_the_crl() -> bool:
        with deployment.api("viewer") as api:
            crl = x509.load_der_x509_crl(api.get("/api/v1/cas/0/crl").content)
        return crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    deployment.wait_for("the next CRL to list it", on_the_crl)
    console.open("/cas")
    assert int(console.text(".generation.active .crl-revoked")) >= 1
    console.screenshot("cas")
    console.open("/health")
    assert console.text("#health")
    console.screenshot("health")


def test_a_form_posted_without_its_csrf_token_is_refused(console: Console):
    deployment = console.deployment
    label = f"csrf-probe-{deployment.kind}"
    serial = format(deployment.issued(label).certificates[0].serial_number, "x")
    console.log_in("operator")
    console.open(f"/certificates/{serial}/revoke")

    # What a forged form from another site would lack: the session's CSRF token.
    console.driver.execute_script("document.querySelector('main form input[name=csrf]').remove()")
    console.driver.find_element(By.ID, "confirm").click()

    console.wait("the refusal", lambda d: "403" in d.find_element(By.TAG_NAME, "h1").text)
    assert "CSRF token is missing or wrong" in console.page()
    console.screenshot("csrf-refused")
    with deployment.api("viewer") as api:
        assert api.get(f"/api/v1/certificates/{serial}").json()["status"] == "valid"


def test_the_console_reads_without_javascript(console_deployment: Deployment):
    try:
        driver = chromium(javascript=False)
    except WebDriverException as error:  # pragma: no cover - reported as it is
        pytest.fail(f"chromium without JavaScript: {error}")
    try:
        console = Console(driver, console_deployment)
        console.log_in("viewer")
        assert "Dashboard" in console.text("h1")
        assert console.text("#issued-last-hour").isdigit()
        console.open("/dead-letters")
        assert "Replay…" not in console.page()  # a viewer is not offered actions
    finally:
        driver.quit()
