#!/usr/bin/env bash
# Set everything up (including a real Label Studio for the integration suite), run the static
# checks (ruff, mypy: scripts/lint.sh), then all tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WITH_LABEL_STUDIO=1 WITH_BROWSER=1 bash scripts/setup.sh
PYTHON="${PYTHON:-python3}" bash scripts/lint.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 REQUIRE_LABEL_STUDIO="${REQUIRE_LABEL_STUDIO:-1}"
exec "${PYTHON:-python3}" -m pytest tests -q "$@"
