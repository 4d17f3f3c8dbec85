# syntax=docker/dockerfile:1
# llmplatform as a container image: one image for every role (web, worker, beat, migrate),
# chosen by the command (deploy/docker-entrypoint.sh). See the README, "Running with containers".
#
#   docker build -t llmplatform .                                   # the production shape
#   docker build --build-arg LOCAL_MODEL=1 -t llmplatform:local .   # + llama.cpp and Gemma 3 270M
#
# LOCAL_MODEL=1 compiles llama-cpp-python (about 10 minutes on 2 cores) for the one-container
# demo (`docker run ... llmplatform:local embedded`); production points the gateway at providers.
#
# Multi-stage: the compilers (LOCAL_MODEL=1 only) stay in the dependency stage; the image gets
# the virtualenv. It runs as an unprivileged user and writes nothing outside /tmp, so it runs
# with a read-only root file system (`--read-only`; compose.yaml: read_only with a tmpfs /tmp).

# Debian 13: its postgresql-client (17) dumps every PostgreSQL server up to 17 (backups).
# Any Debian with Python 3.11 as `python` will do: CI, with no registry in reach, passes
# --build-arg PYTHON_IMAGE=localhost/python:3.11-slim-bookworm, built from Debian packages
# (scripts/podman_env.sh; its postgresql-client is 15).
ARG PYTHON_IMAGE=python:3.11-slim-trixie

# --- Dependencies, in a virtualenv of their own -----------------------------------------------
FROM ${PYTHON_IMAGE} AS dependencies
ARG LOCAL_MODEL=0
# Another package index than PyPI (a mirror): a build argument of this stage only, so it is not
# kept in the image (put no credentials in it: build arguments show in this stage's history).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if [ "$LOCAL_MODEL" = 1 ]; then \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
# Only what decides the dependencies, so this layer is rebuilt when they change, not the code:
# empty packages stand in for the project, which then runs from /app (see below).
COPY pyproject.toml constraints.txt ./
COPY scripts/install_local_model.py scripts/
# LOCAL_MODEL=1: llama-cpp-python as the portable build (run-time CPU dispatch), never one
# compiled for the CPU of the machine that builds the image.
# Behind a proxy that re-signs TLS, pip needs that proxy's CA bundle: a build secret
# (`--secret id=ca_certificates,src=/etc/ssl/certs/ca-certificates.crt`), mounted for this step
# only and stored in no layer. Without it, pip uses its own CA bundle.
RUN --mount=type=secret,id=ca_certificates,target=/run/secrets/ca_certificates \
    if [ -f /run/secrets/ca_certificates ]; then export PIP_CERT=/run/secrets/ca_certificates; fi \
    && mkdir llmplatform gateway privacy deployments \
    && touch llmplatform/__init__.py gateway/__init__.py privacy/__init__.py \
       deployments/__init__.py \
    && if [ "$LOCAL_MODEL" = 1 ]; then python scripts/install_local_model.py; fi \
    && if [ "$LOCAL_MODEL" = 1 ]; then target=".[local-model]"; else target="."; fi \
    && pip install -c constraints.txt "$target" \
    && pip uninstall -y llmplatform

# --- The image ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG LOCAL_MODEL=0
# The project runs from /app (settings find templates/ beside manage.py); its own data
# (static files; SQLite and generated secrets only in the embedded mode) in /app/var.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=llmplatform.settings \
    LLMP_DATA_DIR=/app/var \
    LLMP_HOST=0.0.0.0 \
    LLMP_PORT=8000
# postgresql-client: pg_dump and pg_restore for backups; libgomp1: llama.cpp's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
       $(if [ "$LOCAL_MODEL" = 1 ]; then echo libgomp1; fi) \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 llmp \
    && useradd --system --uid 10001 --gid llmp --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin llmp
COPY --from=dependencies /opt/venv /opt/venv
WORKDIR /app
# The code belongs to root and is read-only for the process; only /app/var is its own.
COPY . /app
# collectstatic imports the settings, which in the embedded mode generate secrets into the data
# directory: throwaway values here, and nothing but the static files is kept in the image.
RUN SECRET_KEY=collectstatic-only LLMP_API_KEY_PEPPER=collectstatic-only \
      LLMP_SUBJECT_HMAC_KEY=collectstatic-only \
      python manage.py collectstatic --noinput --verbosity 0 \
    && find /app/var -mindepth 1 -maxdepth 1 ! -name static -exec rm -rf {} + \
    && python -m compileall -q /app/llmplatform /app/gateway /app/privacy /app/deployments \
    && chmod 0755 /app/deploy/docker-entrypoint.sh \
    && chown -R llmp:llmp /app/var

USER llmp
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["web"]
