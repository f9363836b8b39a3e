"""End to end in a real browser: scripts/web.py serves two demo models side by side with retrieval on localhost, and
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) asks a 반말 question, waits for
both answers and their badges, opens the passages and saves a screenshot, then sends two messages back to back.

Set EEVE_WEB_SCREENSHOT=docs/images/web_chat.png to write the screenshot where the documentation shows it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from eeve_sft.inference.web import LEVEL_NAMES
from helpers import AVX512_BF16, DEMO_MODEL, REPO, make_adapter

QUESTION = "택배 상차 마감 몇 시야? 빨리 알려 줘."
FOLLOW_UPS = ["반품은 어디로 보내?", "재고 실사는 언제 해?"]
INSTALL = "apt-get install chromium chromium-driver fonts-nanum"


def browser_or_skip():
    """Chromium and its driver; outside CI their absence skips the test, in CI (CI=true) it fails it."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        reason = f"the browser test needs {', '.join(missing)} ({INSTALL})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return shutil.which("chromium"), shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served_page(tmp_path):
    """The page of two demo models (the base and a LoRA adapter on it) with a WMS index, on a free local port."""
    browser = browser_or_skip()
    from eeve_sft.retrieval import build_index

    build_index(REPO / "data" / "wms_docs", tmp_path / "wms_index", chunk_chars=800, overlap=100)
    adapter = make_adapter(tmp_path / "sft-demo" / "final", base=str(DEMO_MODEL))
    port = free_port()
    command = [
        sys.executable,
        "scripts/web.py",
        *("--model-path", "base", "--model-path", str(adapter)),  # base: the one the adapter names
        *("--rag", str(tmp_path / "wms_index"), "--rag-top-k", "2"),
        *("--port", str(port), "--device", "cpu", "--greedy", "--max-new-tokens", "24"),
    ]
    path = os.pathsep.join(p for p in (str(AVX512_BF16), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115  (closed below, after the server stops)
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300  # generous: a loaded machine imports slowly
        while True:
            if server.poll() is not None:
                pytest.fail(f"scripts/web.py exited with {server.returncode}: {(tmp_path / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the page did not come up on {url}: {(tmp_path / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, browser
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def chromium(binary: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # No network here: nothing in the background may try to reach out, and no sandbox under root in CI.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",  # containers often give /dev/shm too little room for a renderer
        "--window-size=1400,1000",
        f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_browser_asks_in_banmal_and_sees_both_answers_badges_and_passages(served_page, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, (binary, driver) = served_page
    screenshot = Path(os.environ.get("EEVE_WEB_SCREENSHOT") or tmp_path / "web_chat.png")
    browser = chromium(binary, driver)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(url)

        def expect(condition, what: str):
            try:
                return wait.until(condition)
            except TimeoutException:
                browser.save_screenshot(str(tmp_path / "failed.png"))
                pytest.fail(f"{what} did not appear in the page (screenshot: {tmp_path / 'failed.png'})")

        expect(EC.text_to_be_present_in_element((By.ID, "status"), "Ready"), "the ready status")
        box = expect(EC.element_to_be_clickable((By.CSS_SELECTOR, "#message textarea")), "an enabled message box")
        box.send_keys(QUESTION)
        box.send_keys(Keys.ENTER)
        for column in ("chat-0", "chat-1"):
            badge = expect(
                EC.visibility_of_element_located((By.CSS_SELECTOR, f"#{column} .speech-badge")), f"{column}'s badge"
            )
            [level] = [c[len("level-") :] for c in badge.get_attribute("class").split() if c.startswith("level-")]
            assert level in LEVEL_NAMES and badge.text == LEVEL_NAMES[level]
            bot = browser.find_elements(By.CSS_SELECTOR, f"#{column} [data-testid='bot']")
            assert bot and bot[0].text.strip() and bot[0].text.strip() != "…", f"{column} shows no answer"
            user = browser.find_element(By.CSS_SELECTOR, f"#{column} [data-testid='user']")
            assert user.text.strip() == QUESTION
        # The passages are folded under the answer; opened, they name their document and heading path.
        summary = expect(
            EC.element_to_be_clickable((By.CSS_SELECTOR, "#chat-0 details.passages summary")), "the passages"
        )
        summary.click()
        first = expect(
            EC.visibility_of_element_located((By.CSS_SELECTOR, "#chat-0 details.passages li")), "an opened passage"
        )
        assert first.text.startswith("[1] shipping.md · 출고와 배송 > 상차와 출고 확정")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(screenshot))
        # Two messages sent back to back: the second waits for the first's answers instead of being dropped.
        for message in FOLLOW_UPS:
            box.send_keys(message)
            box.send_keys(Keys.ENTER)
            # As a person would, type the next message once the box has taken this one (it clears on sending).
            expect(lambda _: box.get_attribute("value") == "", "an empty message box after sending")

        def answered_all(driver) -> bool:
            badges = [driver.find_elements(By.CSS_SELECTOR, f"#{c} .speech-badge") for c in ("chat-0", "chat-1")]
            return all(len(found) == 1 + len(FOLLOW_UPS) for found in badges)

        expect(answered_all, "the answers to both follow-up messages")
        asked = [e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, "#chat-1 [data-testid='user']")]
        assert asked == [QUESTION, *FOLLOW_UPS]
    finally:
        browser.quit()
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
