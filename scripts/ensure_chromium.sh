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

bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" chromium
echo "installed: $(command -v chromium)"
