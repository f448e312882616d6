"""A real headless Chromium (Debian's chromium + chromium-driver) through selenium, for page tests."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900", "--autoplay-policy=no-user-gesture-required")


def chromium_available() -> tuple[bool, str]:
    try:
        import selenium  # noqa: F401
    except ImportError as exc:
        return False, f"selenium not installed: {exc}"
    for exe in ("chromium", "chromedriver"):
        if not shutil.which(exe):
            return False, f"{exe} not found (Debian packages chromium and chromium-driver; scripts/setup.sh installs them)"
    return True, ""


@contextmanager
def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sp-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
