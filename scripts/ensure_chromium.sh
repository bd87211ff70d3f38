#!/usr/bin/env bash
# Make sure a Chromium binary is available for the real-browser check of the Label Studio
# integration (tests/integration/test_browser.py drives it through Playwright, launched with
# executable_path, so `playwright install` and its browser download are never needed).
# Installs Debian's `chromium` package with apt-get only when none is present and apt-get exists.
set -euo pipefail

for candidate in "${CHROMIUM_EXECUTABLE:-}" chromium chromium-browser; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
        echo "chromium present: $(command -v "$candidate")"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing and apt-get is not available: install Chromium and set CHROMIUM_EXECUTABLE" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "chromium is missing and this is not root (no sudo): install the 'chromium' package" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
echo "installed: $(command -v chromium)"
