#!/usr/bin/env bash
# Test set-up: Debian's headless Chromium for the report's browser test (tests/test_report.py). Installs the
# package `chromium` when it is missing and apt-get can run (root); otherwise says why, and the browser test skips
# with that reason. Never fails the test run itself.
set -u
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: chromium is missing and apt-get cannot run here (need root and apt-get);" \
         "the browser test will skip" >&2
    exit 0
fi
echo "install_browser: installing Debian's chromium for the report's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends chromium >/tmp/install_browser.log 2>&1; then
    apt-get update -q >>/tmp/install_browser.log 2>&1
    apt-get install -y -q --no-install-recommends chromium >>/tmp/install_browser.log 2>&1 \
        || echo "install_browser: apt-get install chromium failed (see /tmp/install_browser.log);" \
                "the browser test will skip" >&2
fi
exit 0
