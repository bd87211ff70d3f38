#!/usr/bin/env bash
# Install a real Label Studio (for the integration tests) into its own virtualenv.
# Label Studio pins old rq/redis versions, so it must not share the project's environment.
#
#   LS_VENV     virtualenv path (default: <repo>/.venv-ls)
#   LS_VERSION  label-studio version (default: 1.23.2)
#   PYTHON      interpreter used to create the venv (default: python3)
#
# Idempotent: does nothing when the venv already holds the requested version.
# Note: `label-studio --version` STARTS A SERVER, so the version is read with pip show.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="${LS_VENV:-$REPO_ROOT/.venv-ls}"
LS_VERSION="${LS_VERSION:-1.23.2}"
PYTHON="${PYTHON:-python3}"

installed_version() {
    "$LS_VENV/bin/pip" show label-studio 2>/dev/null | awk -F': ' '$1 == "Version" {print $2}'
}

if [ -x "$LS_VENV/bin/label-studio" ] && [ "$(installed_version)" = "$LS_VERSION" ]; then
    echo "label-studio $LS_VERSION already installed in $LS_VENV"
    exit 0
fi

if [ ! -x "$LS_VENV/bin/python" ]; then
    echo "creating virtualenv $LS_VENV"
    "$PYTHON" -m venv "$LS_VENV"
fi

"$LS_VENV/bin/python" -m pip install --quiet --upgrade pip
"$LS_VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION"

got="$(installed_version)"
if [ "$got" != "$LS_VERSION" ]; then
    echo "expected label-studio $LS_VERSION in $LS_VENV, found '${got:-nothing}'" >&2
    exit 1
fi
echo "label-studio $got installed in $LS_VENV ($LS_VENV/bin/label-studio)"
