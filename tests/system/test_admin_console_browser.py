"""The web console driven in a real headless browser (Debian's chromium through
chromium-driver and Selenium) against a real `mailforge serve`: log in, add a domain and a
user, mail that user over SMTP and see it counted on the dashboard, block an address by
failing logins and unblock it, change [imap] max_connections in the services form and see a
new IMAP connection refused over the cap after the reload. Screenshots of each page are kept
under the test's tmp dir (the path is printed)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import time
from pathlib import Path

import pytest

from tests.ports import free_port

from .conftest import cli
from .console_client import ConsoleClient

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium comes with the dev extras")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                    reason="chromium and chromium-driver come with `make test-debs`")
BOSS = ("boss", "boss secret")
ATTACKER = "127.0.0.2"
BLOCK_AFTER = 3


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    # The server's certificate is self-signed; the other tests check it with --cacert.
    options.accept_insecure_certs = True
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _replaced(page):
    """selenium's staleness_of, and also true when chromedriver, asked about the old page while
    the click's navigation removes it, answers "Node with given id does not belong to the
    document" (a WebDriverException, not a StaleElementReferenceException)."""
    def replaced(driver) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False
    return replaced


class Pages:
    def __init__(self, driver, port: int, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, f"https://127.0.0.1:{port}", shots

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, field_id: str, text: str) -> None:
        element = self.driver.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(text)

    def click(self, element_id: str) -> None:
        self.submit(self.driver.find_element(By.ID, element_id))

    def submit(self, button) -> None:
        """Click a button that submits its form, and wait for the page that answers: the click
        returns before it comes on a busy machine (a login checks its password first)."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        button.click()
        WebDriverWait(self.driver, 30).until(_replaced(page))

    def text(self, element_id: str) -> str:
        return self.driver.find_element(By.ID, element_id).text

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))


def imap_greeting(port: int, keep: list[socket.socket]) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    keep.append(sock)
    return sock.recv(200)


@needs_chromium
def test_the_console_in_a_real_browser(make_server, browser, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nconsole screenshots: {shots}")
    server = make_server(admin_console=True, imap_services=True, metrics={"listen": f"127.0.0.1:{free_port()}"},
                         abuse={"exempt_networks": ["127.0.0.1/32"], "block_after": BLOCK_AFTER,
                                "tarpit_after": 100})
    cli(server.conf, "admin", "add", BOSS[0], "--password-stdin", input=BOSS[1] + "\n")
    server.start()
    pages = Pages(browser, server.admin_port, shots)

    pages.open("/")
    assert browser.current_url.endswith("/login")
    pages.fill("name", BOSS[0])
    pages.fill("password", BOSS[1])
    pages.click("login")
    assert "Dashboard" in browser.title and pages.text("whoami") == "boss (system)"

    pages.open("/domains")
    pages.fill("domain-name", "shop.test")
    pages.click("domain-add")
    assert pages.text("done") == "added domain shop.test"
    pages.open("/users?domain=shop.test")
    pages.fill("user-address", "buyer@shop.test")
    pages.fill("user-password", "buyer secret")
    pages.click("user-add")
    assert pages.text("done") == "added mailbox buyer@shop.test"
    assert "buyer@shop.test" in pages.text("users")
    pages.shot("users")

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        smtp.sendmail("someone@remote.test", ["buyer@shop.test"], b"Subject: hello\r\n\r\nhi\r\n")
    server.wait_delivered(1, "buyer@shop.test")
    deadline = time.monotonic() + 30
    while True:
        pages.open("/")
        counted = (pages.text("total-messages_received_total"), pages.text("total-messages_delivered_total"))
        if counted == ("1", "1") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert counted == ("1", "1")
    assert "imap" in pages.text("services") and "admin" in pages.text("services")
    pages.shot("dashboard")

    attacker = ConsoleClient(server.admin_port, server.ca_file, ATTACKER)
    assert [attacker.login("boss", f"guess {n}").status for n in range(BLOCK_AFTER)][-1] == 403
    pages.open("/security")
    assert ATTACKER in pages.text("blocks")
    pages.shot("security")
    pages.submit(browser.find_element(By.CSS_SELECTOR, "button.unblock"))
    assert pages.text("done") == f"lifted the block on {ATTACKER}"
    assert attacker.login(*BOSS).status == 303

    pages.open("/services?section=imap")
    pages.fill("field-max_connections", "many")
    pages.click("save")
    assert pages.text("error").endswith("[imap] max_connections: expected an integer, got 'many'")
    assert server.config.imap.max_connections == 1000 and "max_connections = 1000" in server.conf.read_text()
    pages.fill("field-max_connections", "1")
    pages.click("save")
    assert "saved" in pages.text("done")
    pages.shot("services")
    _wait_for_generation(server, "imap", 2)
    held: list[socket.socket] = []
    try:
        assert imap_greeting(server.imap_port, held).startswith(b"* OK")
        assert imap_greeting(server.imap_port, held).startswith(b"* BYE [UNAVAILABLE] Too many connections")
    finally:
        for sock in held:
            sock.close()
    assert "config [imap]" in cli(server.conf, "logs", "-n", "200").stdout or "config [imap]" in server.log()


def _wait_for_generation(server, service: str, generation: int, timeout: float = 30) -> None:
    """Until every worker of `service` is of `generation` or later: the reload is done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = server.status()["services"][service]["workers"]
        if workers and all(w["generation"] >= generation and w["ready"] for w in workers):
            return
        time.sleep(0.2)
    raise AssertionError(f"{service} workers did not reach generation {generation}")
