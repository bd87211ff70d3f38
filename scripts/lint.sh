#!/usr/bin/env bash
# Static checks: ruff (style, imports, likely bugs) over the code and the tests, then mypy over the
# package (strict for backend.engine and backend.labeling, see pyproject.toml). Exits non-zero on
# any finding. Extra arguments narrow both to those paths, e.g.
#   bash scripts/lint.sh backend/engine backend/labeling
# Needs the dev extra (pip install -e ".[dev]"), which brings ruff, mypy and the stub packages.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
status=0
if [ "$#" -gt 0 ]; then
    ruff_paths=("$@")
    mypy_paths=("$@")
else
    ruff_paths=(backend tests)
    mypy_paths=(backend)
fi
echo "== ruff check ${ruff_paths[*]}"
"$PYTHON" -m ruff check "${ruff_paths[@]}" || status=1
echo "== mypy ${mypy_paths[*]}"
"$PYTHON" -m mypy "${mypy_paths[@]}" || status=1
exit "$status"
