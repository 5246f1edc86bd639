# syntax=docker/dockerfile:1
#
# One image for every sync-airbnb service; the command picks the service:
#   docker run IMAGE migrate | admin | scheduler | fetcher | writer | simulator
#
# Layout: the project lives in /app and is installed *editable* into the virtualenv
# /opt/venv. That keeps shared/migrate.py's MIGRATIONS_DIR
# (Path(__file__).resolve().parents[1] / "migrations") pointing at /app/migrations, with
# no code change: a regular wheel install would put shared/ in site-packages, where no
# migrations/ directory sits next to it. The builder stage installs; the final stage only
# copies /opt/venv and /app at the same paths (the editable finder holds absolute paths).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: resolve and install every dependency into /opt/venv -------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
# Every dependency ships manylinux wheels for CPython 3.11 (asyncpg, orjson, cryptography,
# psycopg[binary]), so the builder needs no compiler.
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
COPY migrations/ migrations/
# The pip cache is a BuildKit cache mount: rebuilds after a source change do not download
# the dependencies again, and the cache never lands in an image layer. The sources are
# byte-compiled here because the runtime root filesystem may be read-only.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip \
    && pip install -e . \
    && python -m compileall -q /app/shared /app/services /app/migrations

# --- runtime: no build tools, no pip cache, a non-root user -------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="sync-airbnb" \
      org.opencontainers.image.description="Airbnb host insights into PostgreSQL/TimescaleDB over NATS JetStream"

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin app

# HTTP_HOST/HTTP_PORT are left to compose.yaml and the manifests (0.0.0.0, 8080): set in
# the image they would also reach every child of `sync-airbnb up`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv
# Owned by root and not writable by the service user: the code is not state.
COPY --from=builder /app /app

WORKDIR /app
USER 10001:10001

# 8000: admin API (ADMIN_PORT); 8080: /health, /health/ready, /metrics of the other services.
EXPOSE 8000 8080

ENTRYPOINT ["sync-airbnb"]
CMD ["--help"]
