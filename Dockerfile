# One image for every scepline service; the command picks the service.
# PYTHON_IMAGE: a Python 3.11 image on Debian (the compose test builds on a local one).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir uv
WORKDIR /app
# The dependencies first, in a layer of their own: a code change rebuilds only the
# project's layer below.
# The developer tools are a workspace member that --no-dev leaves out: uv reads
# their pyproject.toml to check the lock, nothing of them is installed.
COPY pyproject.toml uv.lock ./
COPY devtools/pyproject.toml devtools/pyproject.toml
RUN uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY shared shared
COPY services services
COPY scepline scepline
# Installed into the environment (not linked to /app), so it is byte-compiled too.
RUN uv sync --locked --no-dev --no-editable
# Containers publish what they need: SCEP on SCEPLINE_HTTP_PORT; /metrics, /healthz and
# /readyz on SCEPLINE_HEALTH_PORT (for the container network, never the internet).
ENV PATH="/app/.venv/bin:$PATH" SCEPLINE_DATA_DIR=/var/lib/scepline \
    SCEPLINE_HTTP_HOST=0.0.0.0 SCEPLINE_HEALTH_HOST=0.0.0.0
RUN useradd --system --home /var/lib/scepline scepline && mkdir -p /var/lib/scepline \
    && chown scepline /var/lib/scepline && chmod 0700 /var/lib/scepline
USER scepline
ENTRYPOINT ["scepline"]
