"""Regenerate docs/inspector.png: the web inspector in Debian's headless chromium (through chromedriver
and Selenium), watching `omproxy record` while the README's story is sent. Run from the repository:

    python scripts/screenshot.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
SVC = "/genesys/2/openmedia/customer-support"


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def post(url: str, body: bytes = b"") -> dict:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def story(url: str) -> None:
    iid = post(url + SVC, b"externalId=xy932&userData%5BOrderNumber%5D=ABC123456789")["interactionId"]
    post(f"{url}{SVC}/{iid}/update", b"change%5BOrderNumber%5D=ABC123456780&delete%5BExternalId%5D=")
    post(f"{url}{SVC}/{iid}/get")
    post(f"{url}{SVC}/{iid}/stop", b"reason%3DRSN-123%26description%3DORDER%2BCANCELLED")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text("{}\n")
        proc = subprocess.Popen([sys.executable, "-m", "omproxy", "record", "--port", "0", "--cassette",
                                 f"{tmp}/c.yaml"], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" ", 1)[1].strip()
        driver = browser()
        try:
            driver.get(url + "/_omproxy/ui")
            WebDriverWait(driver, 10).until(ready.text_to_be_present_in_element((By.ID, "status"), "live"))
            story(url)
            WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 4)
            driver.find_elements(By.CSS_SELECTOR, "#rows tr")[0].click()  # the stop, newest on top
            WebDriverWait(driver, 10).until(ready.presence_of_element_located((By.CSS_SELECTOR, "#detail mark")))
            driver.save_screenshot(str(ROOT / "docs" / "inspector.png"))
        finally:
            driver.quit()
            proc.terminate()
            proc.wait()
            proc.stdout.close()
    print(f"wrote {ROOT / 'docs' / 'inspector.png'}")


if __name__ == "__main__":
    main()
