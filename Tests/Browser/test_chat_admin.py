#!/usr/bin/env python3
"""Browser tests: the chat demo and the admin pages in headless Chromium.

Run by scripts/browser-test, which builds wsdemo and passes its path:
    python3 Tests/Browser/test_chat_admin.py --demo PATH [--out DIR]
The script owns the server (it restarts it mid-test), binds only 127.0.0.1,
bounds every wait, and stops the server and the browsers on the way out.
ChatOverTLS runs the chat over https:// and wss:// with certificates from
scripts/make-test-certs, the browser trusting exactly that server key.
ChatRecovery drops a page from the server side and keeps it offline (DevTools
network emulation) while the room goes on: back, it has missed nothing.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 15  # seconds, for any one condition
ROOM = "browser-test"
ARGS = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """wsdemo on 127.0.0.1:port; stop() is graceful (SIGTERM: close 1001)."""

    def __init__(self, binary, port, log_path, extra=(), scheme="http", host="127.0.0.1"):
        self.binary, self.port, self.log_path = binary, port, log_path
        self.extra, self.scheme, self.host = list(extra), scheme, host
        self.process = None

    def start(self):
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--loops", "2"] + self.extra,
            stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.process.stdout.readline()  # the banner, printed once listening
        if "wsdemo chat on" not in line:
            raise RuntimeError(f"wsdemo did not start: {line!r} (see {self.log_path})")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def url(self, path):
        return f"{self.scheme}://{self.host}:{self.port}{path}"


def browser(extra_args=()):
    options = Options()
    for arg in extra_args:
        options.add_argument(arg)
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,800", "--no-first-run", "--disable-background-networking"):
        options.add_argument(arg)
    service = DriverService(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def open_browsers(cls, count, extra_args=()):
    """`count` browsers in cls.drivers; on a failure, the class's teardown runs and it raises."""
    cls.drivers = []
    try:
        for _ in range(count):
            cls.drivers.append(browser(extra_args))
    except Exception:
        cls.tearDownClass()
        raise


def quit_all(drivers, demo):
    """Every browser, then the server; a browser that is gone already is no error."""
    for driver in drivers:
        try:
            driver.quit()
        except Exception:
            pass
    demo.stop()


def wait(driver, condition, message):
    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: condition(d), message)


def state(driver):
    return driver.find_element(By.ID, "state").get_attribute("data-state")


def messages(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#log .msg')].map(e => e.textContent)")


def admin_lines(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#log .admin')].map(e => e.textContent)")


def online(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#online li')].map(e => e.textContent)")


def say(driver, text):
    box = driver.find_element(By.ID, "text")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


class ChatAndAdmin(unittest.TestCase):
    """One demo, three browsers (alice, bob, admin); the steps build on each other, in order."""

    @classmethod
    def setUpClass(cls):
        os.makedirs(ARGS.out, exist_ok=True)
        cls.demo = Demo(ARGS.demo, free_port(), os.path.join(ARGS.out, "server.log"))
        cls.demo.start()
        cls.drivers = []
        try:
            cls.alice, cls.bob, cls.admin = (cls.new_browser() for _ in range(3))
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def new_browser(cls):
        driver = browser()
        cls.drivers.append(driver)
        return driver

    @classmethod
    def tearDownClass(cls):
        quit_all(cls.drivers, cls.demo)

    def shot(self, driver, name):
        path = os.path.join(ARGS.out, name)
        driver.save_screenshot(path)
        print(f"    screenshot {path}", file=sys.stderr)

    def test_1_two_pages_chat_once_and_in_order(self):
        self.alice.get(self.demo.url(f"/?ch={ROOM}&user=alice"))
        self.bob.get(self.demo.url(f"/?ch={ROOM}&user=bob"))
        for d in (self.alice, self.bob):
            wait(d, lambda d: state(d) == "open", "page never connected")
            wait(d, lambda d: sorted(online(d)) == ["alice", "bob"], f"online list: {online(d)}")
        for i in range(1, 6):
            say(self.alice, f"a{i} from alice")
            say(self.bob, f"b{i} from bob")
        expected_a = [f"alice: a{i} from alice" for i in range(1, 6)]
        expected_b = [f"bob: b{i} from bob" for i in range(1, 6)]
        for d in (self.alice, self.bob):
            wait(d, lambda d: len(messages(d)) >= 10, "ten messages never arrived")
            time.sleep(0.3)  # anything extra (a duplicate) would arrive now
            got = messages(d)
            self.assertEqual(len(got), 10, got)
            self.assertEqual(sorted(got), sorted(expected_a + expected_b), "each message exactly once")
            self.assertEqual([m for m in got if m.startswith("alice")], expected_a, "alice's in order")
            self.assertEqual([m for m in got if m.startswith("bob")], expected_b, "bob's in order")

    def test_2_admin_lists_both_and_its_form_reaches_the_right_page(self):
        d = self.admin
        d.get(self.demo.url("/admin/sockets"))
        users = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#connections td.user")]
        self.assertIn("alice", users)
        self.assertIn("bob", users)
        channels = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#channels td:first-child")]
        self.assertIn(ROOM, channels)
        self.shot(d, "admin.png")

        d.find_element(By.XPATH, "//tr[td[@class='user' and text()='bob']]//a[contains(@href,'connection')]").click()
        wait(d, lambda d: d.find_elements(By.ID, "send"), "no send form on the connection page")
        # Invalid JSON is refused by the server with the form shown again.
        d.find_element(By.ID, "send-cmd").send_keys("notice")
        d.find_element(By.ID, "send-param").clear()
        d.find_element(By.ID, "send-param").send_keys("{not json")
        d.find_element(By.ID, "send-button").click()
        wait(d, lambda d: d.find_elements(By.ID, "form-error"), "no validation error shown")
        self.assertIn("param is not JSON", d.find_element(By.ID, "form-error").text)
        # A valid one goes to bob only.
        d.find_element(By.ID, "send-param").clear()
        d.find_element(By.ID, "send-param").send_keys('{"text":"hello bob, from the admin page"}')
        d.find_element(By.ID, "send-button").click()
        wait(d, lambda d: d.find_elements(By.ID, "notice"), "no confirmation after sending")
        self.shot(d, "admin-connection.png")
        wait(self.bob, lambda b: admin_lines(b), "bob never got the admin's message")
        self.assertEqual(admin_lines(self.bob), ['[notice] {"text":"hello bob, from the admin page"}'])
        time.sleep(0.3)
        self.assertEqual(admin_lines(self.alice), [], "alice must not get bob's message")
        self.shot(self.bob, "chat.png")

    def test_3_live_tap_shows_traffic(self):
        d = self.admin
        d.get(self.demo.url("/admin/sockets/tap"))
        wait(d, lambda d: d.find_element(By.ID, "tap-state").text.startswith("live"), "tap never went live")
        say(self.alice, "seen by the tap")
        wait(d, lambda d: "seen by the tap" in d.find_element(By.ID, "tap").text, "the tap did not show the message")
        self.shot(d, "tap.png")

    def test_4_restart_reconnects_and_delivers_the_queued_message(self):
        self.demo.stop()
        for d in (self.alice, self.bob):
            wait(d, lambda d: state(d) in ("waiting", "connecting"), "page did not notice the server left")
        say(self.alice, "queued while down")
        self.assertEqual(self.alice.execute_script("return window.chat.socket.queued"), 1)
        before = {d: messages(d) for d in (self.alice, self.bob)}
        self.demo.start()
        for d in (self.alice, self.bob):
            wait(d, lambda d: state(d) == "open", "page did not reconnect")
            wait(d, lambda d: "alice: queued while down" in messages(d), "the queued message never arrived")
        time.sleep(0.5)
        for d in (self.alice, self.bob):
            got = messages(d)
            self.assertEqual(got, before[d] + ["alice: queued while down"], "once, after the others")
            wait(d, lambda d: sorted(online(d)) == ["alice", "bob"], f"online after restart: {online(d)}")


class TimedResult(unittest.TextTestResult):
    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        self.stream.writeln(f"    {time.monotonic() - self._started:.2f} s  {test._testMethodName}")


def spki_hash(cert_path):
    """base64 SHA-256 of the certificate's public key: what Chromium's
    --ignore-certificate-errors-spki-list trusts (that key only)."""
    pub = subprocess.run(["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der,
                            check=True, capture_output=True).stdout
    return subprocess.run(["base64"], input=digest, check=True, capture_output=True).stdout.decode().strip()


class ChatOverTLS(unittest.TestCase):
    """The chat over https:// and wss://: two pages talk, once and in order."""

    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="cws-browser-tls-")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        subprocess.run([os.path.join(root, "scripts", "make-test-certs"), cls.certs], check=True,
                       capture_output=True)
        cert, key = os.path.join(cls.certs, "server.pem"), os.path.join(cls.certs, "server.key")
        cls.demo = Demo(ARGS.demo, free_port(), os.path.join(ARGS.out, "server-tls.log"),
                        extra=["--tls-cert", cert, "--tls-key", key], scheme="https", host="localhost")
        cls.demo.start()
        open_browsers(cls, 2, [f"--ignore-certificate-errors-spki-list={spki_hash(cert)}"])

    @classmethod
    def tearDownClass(cls):
        quit_all(cls.drivers, cls.demo)
        subprocess.run(["rm", "-rf", cls.certs])

    def test_two_pages_chat_over_wss(self):
        carol, dave = self.drivers
        carol.get(self.demo.url(f"/?ch={ROOM}&user=carol"))
        dave.get(self.demo.url(f"/?ch={ROOM}&user=dave"))
        for d in (carol, dave):
            wait(d, lambda d: state(d) == "open", "page never connected over wss://")
            self.assertTrue(d.execute_script("return window.chat.socket.url").startswith("wss://localhost:"))
            wait(d, lambda d: sorted(online(d)) == ["carol", "dave"], f"online list: {online(d)}")
        for i in range(1, 4):
            say(carol, f"c{i}")
            say(dave, f"d{i}")
        for d in (carol, dave):
            wait(d, lambda d: len(messages(d)) >= 6, "six messages never arrived")
            time.sleep(0.3)
            got = messages(d)
            self.assertEqual([m for m in got if m.startswith("carol")], [f"carol: c{i}" for i in range(1, 4)])
            self.assertEqual([m for m in got if m.startswith("dave")], [f"dave: d{i}" for i in range(1, 4)])
            self.assertEqual(len(got), 6, got)


class ChatRecovery(unittest.TestCase):
    """A page dropped by the server and kept offline for 5 s, while the
    room goes on: back online it shows every message once, in order, and
    the client reports the channel recovered (the library's history, not
    the page's own catch-up)."""

    @classmethod
    def setUpClass(cls):
        cls.demo = Demo(ARGS.demo, free_port(), os.path.join(ARGS.out, "server-recovery.log"))
        cls.demo.start()
        open_browsers(cls, 2)

    @classmethod
    def tearDownClass(cls):
        quit_all(cls.drivers, cls.demo)

    def admin_get(self, path):
        with urllib.request.urlopen(self.demo.url(path), timeout=WAIT) as answer:
            return answer.read().decode()

    def disconnect(self, user):
        """The admin page's disconnect form, for the connection of `user` (close 1001)."""
        overview = self.admin_get("/admin/sockets")
        ids = re.findall(r'<tr data-id="([0-9a-f-]+)"><td>.*?</td><td class=user>' + re.escape(user) + "<", overview)
        self.assertEqual(len(ids), 1, f"one connection of {user}: {ids}")
        page = self.admin_get(f"/admin/sockets/connection?id={ids[0]}")
        token = re.search(r'<form id=disconnect .*?name=token value="([0-9a-f]+)"', page, re.S).group(1)
        self.admin_get(f"/admin/sockets/disconnect?token={token}&id={ids[0]}")

    def test_a_page_offline_for_5_s_sees_every_message_once_in_order(self):
        erin, frank = self.drivers
        room = "recovery-test"
        erin.get(self.demo.url(f"/?ch={room}&user=erin"))
        frank.get(self.demo.url(f"/?ch={room}&user=frank"))
        for d in (erin, frank):
            wait(d, lambda d: state(d) == "open", "page never connected")
            wait(d, lambda d: sorted(online(d)) == ["erin", "frank"], f"online list: {online(d)}")
        for i in range(1, 4):
            say(frank, f"before {i}")
        wait(erin, lambda d: len(messages(d)) == 3, "the first messages never arrived")
        before = messages(erin)

        # Offline: its reconnects fail until it is back. Then the server drops it.
        erin.execute_cdp_cmd("Network.enable", {})
        offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
        erin.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
        self.disconnect("erin")
        wait(erin, lambda d: state(d) != "open", "the page did not notice the drop")
        said = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            said.append(f"frank: while away {len(said) + 1}")
            say(frank, f"while away {len(said)}")
            time.sleep(0.25)
        self.assertNotEqual(state(erin), "open", "the page came back before the 5 s were over")
        wait(frank, lambda d: len(messages(d)) == 3 + len(said), "frank's own lines did not all arrive")

        erin.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
        wait(erin, lambda d: state(d) == "open", "the page did not come back")
        wait(erin, lambda d: len(messages(d)) >= 3 + len(said), "the missed messages never arrived")
        say(frank, "after")
        wait(erin, lambda d: "frank: after" in messages(d), "the live stream did not continue")
        time.sleep(0.3)  # a duplicate would arrive now
        self.assertEqual(messages(erin), before + said + ["frank: after"], "every message once, in order")
        self.assertEqual(erin.execute_script("return window.chat.recoveries"), [[room, True]])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", required=True, help="path to the wsdemo binary")
    parser.add_argument("--out", default=".build-browser", help="screenshots and the server log")
    ARGS = parser.parse_args()
    runner = unittest.TextTestRunner(verbosity=2, resultclass=TimedResult, failfast=True)
    suite = unittest.TestSuite([unittest.defaultTestLoader.loadTestsFromTestCase(ChatAndAdmin),
                                unittest.defaultTestLoader.loadTestsFromTestCase(ChatOverTLS),
                                unittest.defaultTestLoader.loadTestsFromTestCase(ChatRecovery)])
    result = runner.run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
