"""Screenshots of the web-chat page: taken by the browser tests, checked, and (on request) kept
as the README's picture.

    NATIVE1API_WRITE_SCREENSHOT=1 .venv/bin/pytest tests/browser -k stream_an_answer

writes `docs/images/web-chat.png` from the finished chat of that test; without the variable the
screenshot goes only to the test's temporary directory.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from playwright.sync_api import BrowserContext, Page

README_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "web-chat.png"

# Decodes the PNG in the browser itself (no imaging library in the Python dependencies) and
# counts the distinct RGBA values of its pixels.
_COUNT_COLOURS = """async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], {type: 'image/png'}));
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  const data = new Uint32Array(context.getImageData(0, 0, bitmap.width, bitmap.height).data.buffer);
  return {width: bitmap.width, height: bitmap.height, colours: new Set(data).size};
}"""


def take(page: Page, path: Path) -> bytes:
    """A full-page PNG of `page` written to `path` (and to the README's image when asked)."""
    png = page.screenshot(path=path, full_page=True)
    if os.environ.get("NATIVE1API_WRITE_SCREENSHOT") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        README_IMAGE.write_bytes(png)
    return png


def measure(context: BrowserContext, png: bytes) -> dict[str, int]:
    """Width, height and number of distinct colours of a PNG, decoded by the browser."""
    blank = context.new_page()
    try:
        result: dict[str, int] = blank.evaluate(_COUNT_COLOURS, base64.b64encode(png).decode())
        return result
    finally:
        blank.close()
