# One image for every scepline service; the command picks the service.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends softhsm2 \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY shared shared
COPY services services
COPY scepline scepline
# The developer tools are a workspace member that --no-dev leaves out: uv reads
# their pyproject.toml to check the lock, nothing of them is installed.
COPY devtools/pyproject.toml devtools/pyproject.toml
RUN uv sync --locked --no-dev
# Containers publish what they need: SCEP on SCEPLINE_HTTP_PORT; /metrics, /healthz and
# /readyz on SCEPLINE_HEALTH_PORT (for the container network, never the internet).
ENV PATH="/app/.venv/bin:$PATH" SCEPLINE_DATA_DIR=/var/lib/scepline \
    SCEPLINE_HTTP_HOST=0.0.0.0 SCEPLINE_HEALTH_HOST=0.0.0.0
RUN useradd --system --home /var/lib/scepline scepline && mkdir -p /var/lib/scepline \
    && chown scepline /var/lib/scepline && chmod 0700 /var/lib/scepline
USER scepline
ENTRYPOINT ["scepline"]
