#!/bin/sh
# The container's entrypoint: one image, the first argument picks the role.
#
#   web        the ASGI app under uvicorn (API, admin, portal, /healthz); LLMP_WORKERS processes
#   worker     a Celery worker (subject requests, backups, evidence checks, ...)
#   beat       Celery beat: every periodic schedule (llmplatform/celery.py); run exactly one
#   migrate    apply database migrations, then exit (compose runs it once before the others)
#   embedded   `manage.py runplatform`: the one-machine demo (SQLite; the local model needs the
#              image built with --build-arg LOCAL_MODEL=1)
#   manage     `manage.py ...`, e.g. `manage createsuperuser`
#   anything else is run as given
set -eu

role="${1:-web}"
[ "$#" -gt 0 ] && shift
# The health check (deploy/healthcheck.py) reads which role this container runs.
printf '%s\n' "$role" > "${LLMP_ROLE_FILE:-/tmp/llmp-role}"

case "$role" in
  web)
    workers="${LLMP_WORKERS:-2}"
    if [ "$workers" -gt 1 ] && [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
      export PROMETHEUS_MULTIPROC_DIR=/tmp/llmp-prometheus
    fi
    if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
      # Must start empty, or samples of earlier processes would be counted again.
      mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
      find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
    fi
    # --no-proxy-headers: the client address is the platform's business
    # (LLMP_TRUSTED_PROXY_HOPS), not uvicorn's. --lifespan on: the last batch of usage
    # records is written on shutdown. On SIGTERM uvicorn stops accepting and lets open
    # requests and streams finish for up to LLMP_GRACEFUL_SHUTDOWN_SECONDS (keep it below the
    # orchestrator's grace period: compose's stop_grace_period, Kubernetes'
    # terminationGracePeriodSeconds less the preStop sleep). --timeout-worker-healthcheck: a
    # process gets this long to start (import Django and the apps) and to answer the
    # supervisor's pings; uvicorn's 5 s default killed every process in turn on a busy 2-core
    # machine (the image test saw it).
    exec uvicorn llmplatform.asgi:application \
      --host "${LLMP_HOST:-0.0.0.0}" --port "${LLMP_PORT:-8000}" --workers "$workers" \
      --lifespan on --no-proxy-headers \
      --timeout-graceful-shutdown "${LLMP_GRACEFUL_SHUTDOWN_SECONDS:-25}" \
      --timeout-worker-healthcheck "${LLMP_WORKER_START_TIMEOUT:-30}" "$@"
    ;;
  worker)
    exec celery -A llmplatform worker --loglevel "${LOG_LEVEL:-INFO}" \
      --concurrency "${CELERY_CONCURRENCY:-2}" "$@"
    ;;
  beat)
    exec celery -A llmplatform beat --loglevel "${LOG_LEVEL:-INFO}" \
      --schedule "${CELERY_BEAT_SCHEDULE:-/tmp/celerybeat-schedule}" "$@"
    ;;
  migrate)
    exec python manage.py migrate --noinput "$@"
    ;;
  embedded)
    exec python manage.py runplatform "$@"
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
