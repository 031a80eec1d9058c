# syntax=docker/dockerfile:1
# One image for every Notify service: each service is a console script of the same venv
# (notify-ingest, notify-inbox, notify-fanout, notify-admin, …); compose and the Helm chart pick
# the script with `command`. Build: docker build -t notify:dev .

ARG PYTHON_VERSION=3.11

# --- build: resolve exactly what uv.lock pins into /app/.venv -----------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# An ARG declared before FROM is only visible in FROM lines: declare it again to use it here.
ARG PYTHON_VERSION

# Pinned so the resolver that reads uv.lock is the one that wrote it (lock format changes).
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Compile bytecode at build time: the runtime filesystem is read-only in Kubernetes, so
# Python could not cache it there and every start would recompile. Copy (not hardlink) out of
# the cache mount, which is gone after the build. Never fetch a Python: use the base image's.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python${PYTHON_VERSION} \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Third-party dependencies first, from the lock file alone, so this layer is reused until
# uv.lock changes. --frozen: install what the lock says, never re-resolve (the workspace
# members' pyproject files are not here yet, so re-resolving could not work anyway).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace

# Then the workspace members, installed as regular (non-editable) wheels: the runtime stage
# gets the venv only, not the source tree.
COPY schemas ./schemas
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the venv on a slim Python, no build tools, no uv, no source ---------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="notify" \
      org.opencontainers.image.description="Notify notification platform: one image, one console script per service"

# A fixed numeric UID/GID: Kubernetes' runAsNonRoot can only verify a numeric USER, and the
# Helm chart's securityContext names the same ids.
RUN groupadd --system --gid 10001 notify \
 && useradd --system --uid 10001 --gid notify --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin notify

# Owned by root and not writable by the service user: code cannot be modified at run time.
COPY --from=build /app/.venv /app/.venv

# HEALTHCHECK_PORT is not a NOTIFY_ setting: it only tells the image's health check which
# port this container's service listens on (8000 = ingest, the default command).
# HOME=/tmp: the user has no home, and /tmp is the one writable place in Kubernetes (an
# emptyDir), so a library that caches under ~ writes there instead of failing.
ENV PATH="/app/.venv/bin:${PATH}" \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTHCHECK_PORT=8000

WORKDIR /app
USER 10001:10001

EXPOSE 8000 8001 8002 8003 8004 8005

# /healthz only says the process serves (liveness); readiness (/readyz) is the
# orchestrator's business. urlopen raises on a refused connection or a non-2xx answer,
# which makes python exit 1 = unhealthy. No curl in a slim image, so Python does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HEALTHCHECK_PORT', '8000'), timeout=4)"

# Every service handles SIGTERM itself (drain, commit, exit 0); no shell wraps the command, so
# the signal reaches it.
CMD ["notify-ingest"]
