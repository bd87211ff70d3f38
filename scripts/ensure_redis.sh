#!/usr/bin/env bash
# Make sure Debian's redis-server binary is available (used by the test harness,
# which starts its own throw-away Redis instances on free ports).
# Installs it with apt-get only when it is absent; never starts or touches a running Redis.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server present: $(redis-server --version)"
    exit 0
fi

bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" redis-server
# The Debian package may start a system service on port 6379; the harness does not need it
# and does not stop it (it may be a shared instance).
echo "installed: $(redis-server --version)"
