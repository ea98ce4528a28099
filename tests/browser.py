"""Headless Chromium for the report's browser test: find it (or skip with the reason), serve a folder on
127.0.0.1, load a page, collect its links, measure it as a reader's browser lays it out (``probe_page``: overflow,
images, where elements sit) and take screenshots. Debian's chromium is installed by scripts/install_browser.sh,
which `make test` runs first."""
from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.request
from contextlib import contextmanager
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

# Flags for a closed network: without the background-networking ones Chromium keeps trying to reach Google.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = (1280, 800)  # a laptop's browser window: what a reader sees first
# Where the browser tests keep their screenshots (git-ignored build/ by default; CI may point it elsewhere).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "build" / "test-artifacts"))


def chromium_or_skip() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed: `make test` installs Debian's chromium with "
                    "scripts/install_browser.sh where apt-get can run as root; it could not here")
    return binary


def run_chromium(binary: str, *args: str, window: tuple[int, int] = (1280, 2000),
                 timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary, *FLAGS, f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}",
                               *args], capture_output=True, text=True, timeout=timeout)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def page_links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


def check_page(binary: str, root: Path, page: str, screenshot: Path) -> tuple[str, list[str]]:
    """Load ``root/page`` in headless Chromium over HTTP, check that every link and image on the rendered page
    resolves (HTTP 200, or an anchor that exists on the page) and take a screenshot. Returns the rendered DOM and
    the links checked."""
    with serve(root) as base:
        url = urljoin(base, page)
        dom = run_chromium(binary, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        links = page_links(dom.stdout)
        for link in links:
            target = urljoin(url, link)
            parsed = urlparse(target)
            if parsed.fragment and target.split("#")[0] == url:
                assert f'id="{parsed.fragment}"' in dom.stdout, f"anchor {link} has no target on the page"
                continue
            assert parsed.hostname == "127.0.0.1", f"link {link} leaves the results folder"
            with urllib.request.urlopen(target, timeout=30) as response:
                assert response.status == 200, link
        shot = run_chromium(binary, f"--screenshot={screenshot}", "--hide-scrollbars", url)
        assert shot.returncode == 0, shot.stderr[-2000:]
    return dom.stdout, links


# Runs in the page after it has loaded: the page's width against the view's, every element that reaches past the
# view's right edge outside a box that scrolls or clips it, every image and whether it loaded, and the elements
# that SELECTORS name (their position in the view, text and data attributes). The result is written into the page,
# and --dump-dom hands it back.
PROBE = """<script>
window.addEventListener("load", () => {
  const root = document.documentElement, width = root.clientWidth;
  const clipped = e => { for (let a = e.parentElement; a && a !== root; a = a.parentElement) {
    if (["auto", "scroll", "hidden"].includes(getComputedStyle(a).overflowX)) return true; } return false; };
  const name = e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "");
  const out = {scroll_width: root.scrollWidth, client_width: width, view_height: window.innerHeight,
    page_height: root.scrollHeight,
    beyond: [...document.body.querySelectorAll("*")].filter(e => e.getBoundingClientRect().right > width + 0.5
      && !clipped(e)).slice(0, 10).map(e => name(e) + ": " + (e.textContent || "").trim().slice(0, 80)),
    images: [...document.images].map(i => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0,
                                            width: i.naturalWidth})),
    elements: {}};
  for (const s of SELECTORS) out.elements[s] = [...document.querySelectorAll(s)].map(e => {
    const r = e.getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, right: r.right, text: (e.textContent || "").trim(), data: {...e.dataset},
            scroll_width: e.scrollWidth, client_width: e.clientWidth};
  });
  const pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def probe_page(binary: str, root: Path, page: str, selectors: tuple[str, ...] = (),
               window: tuple[int, int] = VIEWPORT) -> dict:
    """Load ``root/page`` over HTTP in headless Chromium with a view of ``window`` (width, height) and measure it
    (``PROBE``): ``{"scroll_width", "client_width", "view_height", "page_height", "beyond": [elements past the
    right edge], "images": [{"src", "loaded", "width"}], "elements": {selector: [{"top", "bottom", "right",
    "text", "data", "scroll_width", "client_width"}]}}``. The page is measured from a copy beside it with the
    probe added, so its links resolve as the page's own."""
    source = root / page
    probe = source.with_name(f".probe-{source.name}")
    text = source.read_text(encoding="utf-8")
    script = PROBE.replace("SELECTORS", json.dumps(list(selectors)))
    probe.write_text(text.replace("</body>", script + "</body>", 1), encoding="utf-8")
    try:
        with serve(root) as base:
            result = run_chromium(binary, "--dump-dom", "--virtual-time-budget=15000",
                                  urljoin(base, probe.relative_to(root).as_posix()), window=window)
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the probe did not run in {page}: {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def screenshots(binary: str, root: Path, page: str, name: str, page_height: int) -> tuple[Path, Path]:
    """Screenshots of ``root/page``: what a reader sees first (``VIEWPORT``) and the whole page at the same width
    (up to 16,000 pixels), kept in ``ARTIFACTS`` as ``<name>-1280x800.png`` and ``<name>-full.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    first, full = ARTIFACTS / f"{name}-{VIEWPORT[0]}x{VIEWPORT[1]}.png", ARTIFACTS / f"{name}-full.png"
    with serve(root) as base:
        url = urljoin(base, page)
        for path, window in ((first, VIEWPORT), (full, (VIEWPORT[0], min(max(page_height, VIEWPORT[1]), 16_000)))):
            shot = run_chromium(binary, f"--screenshot={path}", "--hide-scrollbars", url, window=window)
            assert shot.returncode == 0 and path.exists(), shot.stderr[-2000:]
    return first, full
