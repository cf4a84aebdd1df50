"""What the browser tests share: Debian's Chromium, the flags this machine's closed network needs, and pressing a
button of the page until the page says it is done (tests/test_browser.py, tests/test_static_browser.py; their `browser` fixture is in conftest.py)."""

import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).is_file()
# Otherwise Chromium keeps trying to reach Google's services.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEW = {"width": 1280, "height": 720}  # a projector's, or a small laptop's


def press(page, button: str, timeout_ms: int = 120_000) -> str:
    """Click `button` and wait for the page's state to say done or error (a selector: a page's content security
    policy lets no string be evaluated as script); returns the state."""
    page.evaluate("document.body.dataset.state = 'waiting'")
    page.click(button)
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=timeout_ms)
    return page.evaluate("document.body.dataset.state")
