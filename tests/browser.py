"""Headless Chromium for the report's browser test: find it (or skip with the reason), serve a folder on
127.0.0.1, load a page, collect its links, take a screenshot. Debian's chromium is installed by
scripts/install_browser.sh, which `make test` runs first."""
from __future__ import annotations

import functools
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
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,2000"]


def chromium_or_skip() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed: `make test` installs Debian's chromium with "
                    "scripts/install_browser.sh where apt-get can run as root; it could not here")
    return binary


def run_chromium(binary: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


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
        shot = run_chromium(binary, f"--screenshot={screenshot}", url)
        assert shot.returncode == 0, shot.stderr[-2000:]
    return dom.stdout, links
