"""The web inspector in a real browser: Debian's chromium through chromidriver (Selenium), against
`omproxy record` and `omproxy replay` processes."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("selenium", reason="selenium is a test dependency: pip install -e '.[test]'")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are "
                                "not installed; .ci/run installs them")
SVC = "/genesys/2/openmedia/customer-support"
STORY = Path(__file__).resolve().parent.parent.parent / "cassettes" / "examples" / "reference-story.yaml"


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def omproxy(tmp_path):
    procs = []

    def start(*args: str, config: str = "{}\n") -> str:
        (tmp_path / "config.yaml").write_text(config)
        proc = subprocess.Popen([sys.executable, "-m", "omproxy", *args, "--port", "0"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        ready_line, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready_line, "no ready line"
        return proc.stdout.readline().rsplit(" ", 1)[1].strip()

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


def post(url: str, body: bytes = b"") -> dict:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def open_page(browser, url: str) -> WebDriverWait:
    browser.get(url + "/_omproxy/ui")
    wait = WebDriverWait(browser, 15)
    wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "live"))
    return wait


def rows(browser) -> list:
    return browser.find_elements(By.CSS_SELECTOR, "#rows tr")


def test_the_story_arrives_live_and_decoded_and_a_finding_is_marked(browser, omproxy, tmp_path) -> None:
    url = omproxy("record", "--cassette", str(tmp_path / "c.yaml"))
    wait = open_page(browser, url)
    iid = post(url + SVC, b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789")["interactionId"]
    post(f"{url}{SVC}/{iid}/update", b"change%5BOrderNumber%5D=ABC123456780&delete%5BExternalId%5D=")
    post(f"{url}{SVC}/{iid}/get")
    post(f"{url}{SVC}/{iid}/stop", b"reasonSystemName=Cancel")
    wait.until(lambda d: len(rows(d)) == 4)  # pushed: the page was never reloaded
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows(browser)] == ["stop", "get", "update", "create"]
    rows(browser)[2].click()  # the update
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, "#detail .decoded"), "change"))
    tree = json.loads(browser.find_element(By.CSS_SELECTOR, "#detail .decoded").text)
    assert tree == {"change": {"OrderNumber": "ABC123456780"}, "delete": {"ExternalId": ""}}
    post(f"{url}{SVC}/{iid}/stop", b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED")
    wait.until(lambda d: len(rows(d)) == 5)
    assert "double-encoded" in rows(browser)[0].text
    rows(browser)[0].click()
    mark = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#detail mark")))
    assert mark.text == "reason%3DRSN-123%26description%3DORDER%2BCANCELLED"


def test_a_redacted_value_never_reaches_the_page(browser, omproxy, tmp_path) -> None:
    url = omproxy("record", "--cassette", str(tmp_path / "c.yaml"),
                  config="redact:\n  form_keys: ['userData[CreditCard]']\n")
    wait = open_page(browser, url)
    post(url + SVC, b"externalId=e&userData%5BCreditCard%5D=4111111111111111")
    wait.until(lambda d: len(rows(d)) == 1)
    rows(browser)[0].click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#detail .decoded")))
    assert "REDACTED" in browser.page_source and "4111111111111111" not in browser.page_source


def test_replay_shows_what_a_cassette_never_played(browser, omproxy) -> None:
    url = omproxy("replay", "--cassette", str(STORY))
    wait = open_page(browser, url)
    post(url + SVC, b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789&userData%5BTestKey2%5D=Test+value"
                    b"&userData%5BKeyToDelete%5D=value+to+delete")
    browser.find_element(By.CSS_SELECTOR, "nav button[data-tab=cassettes]").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cassette-list tr"))
    browser.find_elements(By.CSS_SELECTOR, "#cassette-list tr")[0].click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#interactions tr")) == 6)
    never = browser.find_elements(By.CSS_SELECTOR, "#interactions tr.never")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in never] == ["1", "2", "3", "4", "5"]


def test_the_decode_box_says_why(browser, omproxy, tmp_path) -> None:
    url = omproxy("record", "--cassette", str(tmp_path / "c.yaml"))
    wait = open_page(browser, url)
    browser.find_element(By.CSS_SELECTOR, "nav button[data-tab=decode]").click()
    browser.find_element(By.ID, "decode-body").send_keys("userData[KeyToDelete]=value to delete")
    wait.until(ready.text_to_be_present_in_element((By.ID, "decode-result"), "literal-space"))
    assert "userData%5BKeyToDelete%5D=value+to+delete" in browser.find_element(By.ID, "decode-result").text


def test_with_an_admin_token_the_page_works_when_opened_with_it(browser, omproxy, tmp_path) -> None:
    url = omproxy("record", "--cassette", str(tmp_path / "c.yaml"), config="admin:\n  token: s3cret\n")
    with pytest.raises(urllib.error.HTTPError) as refused:  # without it: refused
        urllib.request.urlopen(url + "/_omproxy/ui", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    browser.get(url + "/_omproxy/ui?token=s3cret")
    wait = WebDriverWait(browser, 15)
    wait.until(ready.text_to_be_present_in_element((By.ID, "status"), "live"))
    post(url + SVC, b"externalId=t1")
    wait.until(lambda d: len(rows(d)) == 1)
    rows(browser)[0].click()
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, "#detail .decoded"), "t1"))


def test_the_table_fits_the_detail_scrolls_and_an_exchange_goes_out_as_curl_har_or_cassette(
        browser, omproxy, tmp_path) -> None:
    """D15 and what mitmweb users reach for: at 1024, 1280 and 1920 px no finding hides past the table's
    edge, times carry milliseconds, a finding kind is one badge; the detail pane scrolls by itself;
    copy as curl; clear; download what is shown as HAR or as a cassette."""
    import re

    from tests.support import har_problems

    url = omproxy("record", "--cassette", str(tmp_path / "c.yaml"))
    wait = open_page(browser, url)
    iid = post(url + SVC, b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789")["interactionId"]
    post(f"{url}{SVC}/{iid}/update", b"change[A]=a b&change[B]=c d&delete[C]=")  # literal spaces twice
    post(f"{url}{SVC}/{iid}/stop", b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED")
    wait.until(lambda d: len(rows(d)) == 3)
    for width in (1024, 1280, 1920):
        browser.set_window_size(width, 900)
        fits = browser.execute_script(
            "const s = document.querySelector('#live');"
            "const cells = [...document.querySelectorAll('#rows td.findings')];"
            "return {over: s.scrollWidth - s.clientWidth, page: document.documentElement.scrollWidth - innerWidth,"
            " right: Math.max(...cells.map((c) => c.getBoundingClientRect().right)),"
            " edge: s.getBoundingClientRect().right};")
        assert fits["over"] <= 1 and fits["page"] <= 1 and fits["right"] <= fits["edge"] + 1, (width, fits)
        browser.save_screenshot(str(tmp_path / f"inspector-{width}.png"))
    update = rows(browser)[1]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", update.find_elements(By.TAG_NAME, "td")[0].text)
    badges = [b.text for b in update.find_elements(By.CSS_SELECTOR, ".badge")]
    assert badges.count("literal-space ×2") == 1 and "literal-space" not in badges, badges
    update.click()
    curl = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#detail pre.curl"))).text
    assert curl.startswith(f"curl -X POST '{url}{SVC}/{iid}/update'") and "--data-raw 'change[A]=a b" in curl
    detail = browser.execute_script("const d = getComputedStyle(document.querySelector('#detail'));"
                                    "return d.overflowY;")
    assert detail == "auto"
    shown = ",".join(r.get_attribute("data-id") for r in rows(browser))
    with urllib.request.urlopen(f"{url}/_omproxy/download?format=har&ids={shown}", timeout=10) as answer:
        har = json.loads(answer.read())
    assert har_problems(har) == [] and len(har["log"]["entries"]) == 3
    with urllib.request.urlopen(f"{url}/_omproxy/download?format=cassette", timeout=10) as answer:
        (tmp_path / "down.yaml").write_bytes(answer.read())
    from omproxy.cassette import storage

    assert [r.request.operation.kind for r in storage.load(tmp_path / "down.yaml").interactions] == [
        "create", "update", "stop"]
    browser.find_element(By.ID, "clear").click()
    assert rows(browser) == []
    assert browser.find_element(By.CSS_SELECTOR, "label[for=decode-body]")


async def test_8_a_page_that_reads_nothing_is_let_go() -> None:
    """Reliability finding 8: a page that never read kept costing every exchange a queue put, for ever."""
    from omproxy.config.options import Redaction
    from omproxy.exchange import Exchange
    from omproxy.model import Request, Response
    from omproxy.redaction import Redactor
    from omproxy.serve.observers.inspector import KEEP, Live

    live = Live(Redactor(Redaction()), "simulate")
    stream = live.stream()
    assert await stream.__anext__() == b"retry: 2000\n\n"  # the page is open; it reads no further
    assert len(live.pages) == 1
    for n in range(KEEP + 1):
        ex = Exchange(Request("POST", f"{SVC}/{n}/get"))
        ex.response = Response(200, b'{"statusCode":0}')
        live(ex)
    assert live.pages == set()  # let go: no more work for it
    seen = [chunk async for chunk in stream]  # the kept rows, what it had queued, then its stream ends
    assert len(seen) == KEEP + KEEP - 1
