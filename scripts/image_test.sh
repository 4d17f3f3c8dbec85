#!/usr/bin/env bash
# `make image-test` (CI runs it before the tests): build the image from the Dockerfile and run it.
#
#  1. The base the Dockerfile's ARG PYTHON_IMAGE names, built from Debian packages once (no
#     registry is in reach here; scripts/podman_env.sh), then the image, tagged
#     localhost/llmplatform:ci; its size is printed.
#  2. web, worker and beat from that image, as the unprivileged user with a read-only root
#     file system, on the host network against this machine's PostgreSQL (a database of their
#     own) and Redis (a db number of their own); the migrate role first; a local upstream
#     (bench/mock_upstream.py) configured as the provider behind the alias `default` with
#     `manage apply_config`, a tenant and an API key made inside the container.
#  3. The smoke test: /readyz answers 200, a chat completion through /v1/chat/completions is
#     the upstream's answer, a Celery task sent from web is run by the worker, and beat's
#     periodic heartbeat is run too; each container's own health check passes; each stops
#     cleanly on SIGTERM (exit status 0 within its grace period).
#  4. compose.yaml, started with one command (podman-compose) with .ci/compose.yaml's override
#     (PostgreSQL and Redis images built from Debian packages, the upstream as a service), and
#     the same smoke test through the published loopback port.
#
# Every container, the database and the Redis db it used are removed at the end, failed or not;
# the images stay (the layer cache of the next run; localhost/llmplatform:ci is what the
# Kubernetes test plays). Exit status 0 only if all passed.
# Environment: LLMP_IMAGE_TEST_DB (default llmp_img_ci), LLMP_IMAGE_TEST_REDIS_DB (14),
# LLMP_IMAGE_TEST_COMPOSE=0 skips step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=scripts/podman_env.sh
. scripts/podman_env.sh

IMAGE=localhost/llmplatform:ci
WORK="$ROOT/var/image-test"
DB="${LLMP_IMAGE_TEST_DB:-llmp_img_ci}"
REDIS_DB="${LLMP_IMAGE_TEST_REDIS_DB:-14}"
PG_URL="postgres://postgres@127.0.0.1:5432"
NAME=llmp-imagetest
PROJECT=llmp-imagetest-compose
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p "$WORK"
rm -f "$WORK"/*.log

log() { printf 'image-test: %s\n' "$*"; }
fail() { printf 'image-test: FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c "import base64, secrets; print(base64.b64encode(secrets.token_bytes($1)).decode())"; }

UPSTREAM_PID=""
COMPOSE_UP=0
cleanup() {
  local status=$?
  set +e
  if [ "$status" != 0 ]; then
    for c in $(podman ps -a --format '{{.Names}}' | grep -E "^($NAME-|${PROJECT}_)"); do
      echo "----- logs of $c (last 40 lines)" >&2
      podman logs --tail 40 "$c" >&2 2>&1
    done
  fi
  for c in $(podman ps -a --format '{{.Names}}' | grep -E "^$NAME-"); do
    podman rm -f -t 0 "$c" >/dev/null 2>&1
  done
  if [ "$COMPOSE_UP" = 1 ]; then
    compose down -v -t 0 >/dev/null 2>&1
  fi
  # podman-compose 1.0.3's `down` leaves the project's network.
  podman network rm -f "${PROJECT}_default" >/dev/null 2>&1
  [ -n "$UPSTREAM_PID" ] && kill "$UPSTREAM_PID" 2>/dev/null
  psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
  redis-cli -n "$REDIS_DB" flushdb >/dev/null 2>&1
  exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# --- 1. The images ------------------------------------------------------------------------------
started=$(now)
BASE=$(llmp_base_image)
log "base image $BASE ($(since "$started") s)"

# pip inside the build reaches PyPI through the host's network, as pip here does: an http(s)
# index configured here (PIP_INDEX_URL or pip's configuration; local directories the build
# cannot see are left out) goes in as a build argument of the discarded dependency stage, and
# the CA bundle pip trusts here (PIP_CERT or pip's `cert`: a proxy that re-signs TLS) as a
# build secret, mounted for the pip step only and stored in no layer.
pip_args=()
index="${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}"
case "$index" in http://* | https://*) pip_args+=(--build-arg "PIP_INDEX_URL=$index") ;; esac
cert="${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}"
[ -n "$cert" ] && [ -f "$cert" ] && pip_args+=(--secret "id=ca_certificates,src=$cert")

started=$(now)
previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# --format docker: the OCI image format has no HEALTHCHECK.
podman build --quiet --network host --format docker --build-arg "PYTHON_IMAGE=$BASE" \
  "${pip_args[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
  || { tail -40 "$WORK/build.log" >&2; fail "the image did not build (var/image-test/build.log)"; }
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in $(since "$started") s: $((size / 1000000)) MB ($size bytes)"
# The image this one replaces (not `image prune`: the dangling build stages are the layer cache).
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi

# The image's own promises: runs as the unprivileged user, no compiler, a health check.
[ "$(podman image inspect --format '{{.Config.User}}' "$IMAGE")" = llmp ] || fail "not USER llmp"
podman image inspect --format '{{.Config.Healthcheck}}' "$IMAGE" | grep -q healthcheck.py \
  || fail "no HEALTHCHECK"
podman run --rm --read-only --health-interval disable "$IMAGE" sh -c \
  '[ "$(id -u)" = 10001 ] && ! command -v gcc && ! command -v cc && ! touch /app/x 2>/dev/null' \
  >/dev/null || fail "the image runs as root, has a compiler or a writable /app"

# --- Checks shared by both runs ----------------------------------------------------------------
# Requests go as the TLS proxy in front would send them (production mode redirects plain HTTP).
PROXY_HEADERS=(-H "X-Forwarded-Proto: https" -H "Host: localhost")

wait_live() {  # base URL
  for _ in $(seq 1 180); do
    curl -sf -o /dev/null "${PROXY_HEADERS[@]}" "$1/healthz" && return 0
    sleep 1
  done
  fail "/healthz did not answer 200 within 180 s"
}

# Ready once the database, the cache and a provider behind an alias are (so after configure).
wait_ready() {  # base URL
  local code=000
  for _ in $(seq 1 180); do
    code=$(curl -s -o "$WORK/readyz.json" -w '%{http_code}' "${PROXY_HEADERS[@]}" "$1/readyz" || true)
    [ "$code" = 200 ] && { log "/readyz 200: $(cat "$WORK/readyz.json")"; return 0; }
    sleep 1
  done
  fail "/readyz answered $code after 180 s: $(cat "$WORK/readyz.json" 2>/dev/null)"
}

# The upstream behind the alias `default`, a tier that allows it, a tenant on that tier and an
# API key, made inside the web container as an operator would; prints the key.
configure() {  # web container, upstream base URL
  cat >"$WORK/config.yaml" <<EOF
tiers:
  - name: ci
    description: The image test
    requests_per_minute: 600
    tokens_per_minute: 1000000
    max_prompt_chars: 8000
    allowed_aliases: []
providers:
  - name: upstream
    kind: openai
    base_url: $2
    timeouts: {connect: 5, read: 30}
deployments:
  - name: mock
    provider: upstream
    model: mock
    price: {input_per_1k: 0, output_per_1k: 0}
model_aliases:
  - name: default
    description: The image test's upstream
    versions:
      - version: v1
        deployment: mock
        weight: 100
EOF
  podman exec -i "$1" sh -c 'cat > /tmp/config.yaml && python manage.py apply_config /tmp/config.yaml' \
    <"$WORK/config.yaml" >"$WORK/apply_config.log" 2>&1 \
    || { cat "$WORK/apply_config.log" >&2; fail "apply_config"; }
  podman exec "$1" python manage.py shell -c "
from gateway.models import Tier
from gateway.services import tenant_create
from llmplatform.actors import Actor
tenant_create(actor=Actor.system('cli:image-test'), name='Image test', slug='image-test',
              tier=Tier.objects.get(name='ci'))" >/dev/null || fail "tenant_create"
  podman exec "$1" python manage.py create_api_key --tenant image-test --name smoke --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'
}

chat_completion() {  # base URL, key
  local code
  code=$(curl -s -o "$WORK/chat.json" -w '%{http_code}' "${PROXY_HEADERS[@]}" \
    -H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
    -d '{"model": "default", "messages": [{"role": "user", "content": "Say hello."}]}' \
    "$1/v1/chat/completions" || true)
  [ "$code" = 200 ] || fail "chat completion answered $code: $(cat "$WORK/chat.json")"
  python3 - "$WORK/chat.json" <<'EOF' || fail "chat completion: $(cat "$WORK/chat.json")"
import json, sys
reply = json.load(open(sys.argv[1]))
text = reply["choices"][0]["message"]["content"]
assert text.startswith("Hello from the benchmark upstream"), text
assert reply["model"] == "default" and reply["usage"]["completion_tokens"] > 0, reply
print(f"image-test: chat completion 200: {text!r}")
EOF
}

# A Celery round trip: web sends the heartbeat task and a worker runs it (it writes the time
# to the shared cache, which web reads back); then, the mark cleared again, beat's own periodic
# heartbeat (every LLMP_CELERY_HEARTBEAT_SECONDS) comes round through the worker.
celery_round_trip() {  # web container
  podman exec "$1" python manage.py shell -c "
import time
from django.core.cache import cache
from llmplatform.tasks import HEARTBEAT_KEY, heartbeat, last_heartbeat

for sent_by in ('web', 'beat'):
    cache.delete(HEARTBEAT_KEY)
    start = time.time()
    if sent_by == 'web':
        heartbeat.delay()
    while last_heartbeat() is None:
        if time.time() - start > 90:
            raise SystemExit(f'no worker ran the heartbeat {sent_by} sent within 90 s')
        time.sleep(0.2)
    print(f'image-test: Celery: a worker ran the heartbeat {sent_by} sent, '
          f'{time.time() - start:.1f} s after', 'sending' if sent_by == 'web' else 'clearing')
" || fail "Celery round trip"
}

health_checks() {  # containers...
  for c in "$@"; do
    local ok=0
    for _ in $(seq 1 60); do
      if podman healthcheck run "$c" >/dev/null 2>&1; then ok=1; break; fi
      sleep 1
    done
    [ "$ok" = 1 ] || fail "the health check of $c does not pass"
  done
  log "health checks pass: $*"
}

stop_cleanly() {  # grace seconds, containers...
  local grace=$1; shift
  for c in "$@"; do
    podman stop -t "$grace" "$c" >/dev/null
    local status
    status=$(podman inspect --format '{{.State.ExitCode}}' "$c")
    [ "$status" = 0 ] || fail "$c exited $status on SIGTERM (grace $grace s)"
  done
  log "stopped cleanly (exit 0 on SIGTERM): $*"
}

# --- 2 and 3. web, worker and beat against this machine's PostgreSQL and Redis ------------------
started=$(now)
psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" \
  >/dev/null
redis-cli -n "$REDIS_DB" flushdb >/dev/null

upstream_port=$(free_port)
"$PYTHON" bench/mock_upstream.py --port "$upstream_port" >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!

web_port=$(free_port)
# The example configuration, with fresh secrets and this machine's services.
{
  grep -vE '^(SECRET_KEY|LLMP_API_KEY_PEPPER|LLMP_SUBJECT_HMAC_KEY|LLMP_MASTER_KEY|DATABASE_URL|REDIS_URL|CELERY_BROKER_URL|CELERY_CONCURRENCY|ALLOWED_HOSTS|LLMP_TRUSTED_PROXY_HOPS|POSTGRES_[A-Z]+)=' \
    deploy/compose.env.example
  echo "SECRET_KEY=$(secret 48)"
  echo "LLMP_API_KEY_PEPPER=$(secret 48)"
  echo "LLMP_SUBJECT_HMAC_KEY=$(secret 48)"
  echo "LLMP_MASTER_KEY=$(secret 32)"
  echo "ALLOWED_HOSTS=localhost"
  echo "LLMP_TRUSTED_PROXY_HOPS=0"
  echo "DATABASE_URL=$PG_URL/$DB"
  echo "REDIS_URL=redis://127.0.0.1:6379/$REDIS_DB"
  echo "CELERY_BROKER_URL=redis://127.0.0.1:6379/$REDIS_DB"
  echo "CELERY_CONCURRENCY=1"
  echo "LLMP_CELERY_HEARTBEAT_SECONDS=5"
  echo "LLMP_PORT=$web_port"
} >"$WORK/host.env"
chmod 600 "$WORK/host.env"

# Podman runs health checks from systemd timers, which this machine lacks: --health-interval
# disable keeps them from being scheduled; the test runs each with `podman healthcheck run`.
run_args=(--network host --read-only --health-interval disable --env-file "$WORK/host.env")
podman run --rm --name "$NAME-migrate" "${run_args[@]}" "$IMAGE" migrate >"$WORK/migrate.log" 2>&1 \
  || { tail -20 "$WORK/migrate.log" >&2; fail "migrate"; }
log "migrations applied ($(since "$started") s)"
for role in web worker beat; do
  podman run -d --name "$NAME-$role" "${run_args[@]}" "$IMAGE" "$role" >/dev/null 2>>"$WORK/podman.log"
done

base="http://127.0.0.1:$web_port"
wait_live "$base"
key=$(configure "$NAME-web" "http://127.0.0.1:$upstream_port/v1")
wait_ready "$base"
chat_completion "$base" "$key"
celery_round_trip "$NAME-web"
health_checks "$NAME-web" "$NAME-worker" "$NAME-beat"
# compose.yaml's grace periods: web 30 s (uvicorn drains for 25), worker 2 min, beat 10 s.
stop_cleanly 30 "$NAME-web"
stop_cleanly 120 "$NAME-worker"
stop_cleanly 10 "$NAME-beat"
for role in web worker beat; do podman rm "$NAME-$role" >/dev/null; done
log "host-network run passed ($(since "$started") s)"

# --- 4. compose.yaml ------------------------------------------------------------------------------
if [ "${LLMP_IMAGE_TEST_COMPOSE:-1}" = 0 ]; then
  log "compose skipped (LLMP_IMAGE_TEST_COMPOSE=0)"
  exit 0
fi
started=$(now)
for service in postgres redis; do  # from the layer cache after the first time
  podman build --quiet --network host --build-arg "BASE_IMAGE=$BASE" \
    -t "localhost/llmplatform-ci-$service" -f ".ci/images/$service.Dockerfile" .ci/images \
    >"$WORK/build-$service.log" 2>&1 || { tail -20 "$WORK/build-$service.log" >&2; fail "$service image"; }
done
log "PostgreSQL and Redis images for compose ready ($(since "$started") s)"

password=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
{
  grep -vE '^(SECRET_KEY|LLMP_API_KEY_PEPPER|LLMP_SUBJECT_HMAC_KEY|LLMP_MASTER_KEY|DATABASE_URL|POSTGRES_PASSWORD|ALLOWED_HOSTS|CELERY_CONCURRENCY)=' \
    deploy/compose.env.example
  echo "SECRET_KEY=$(secret 48)"
  echo "LLMP_API_KEY_PEPPER=$(secret 48)"
  echo "LLMP_SUBJECT_HMAC_KEY=$(secret 48)"
  echo "LLMP_MASTER_KEY=$(secret 32)"
  echo "POSTGRES_PASSWORD=$password"
  echo "DATABASE_URL=postgres://llmplatform:$password@postgres:5432/llmplatform"
  echo "ALLOWED_HOSTS=localhost"
  echo "CELERY_CONCURRENCY=1"
  echo "LLMP_CELERY_HEARTBEAT_SECONDS=5"
} >"$WORK/compose.env"
chmod 600 "$WORK/compose.env"

compose_port=$(free_port)
compose() {
  LLMP_IMAGE="$IMAGE" LLMP_COMPOSE_ENV="$WORK/compose.env" LLMP_HTTP_PORT="$compose_port" \
    podman-compose -p "$PROJECT" -f compose.yaml -f .ci/compose.yaml "$@"
}
COMPOSE_UP=1
compose up -d >"$WORK/compose-up.log" 2>&1 || { tail -30 "$WORK/compose-up.log" >&2; fail "compose up"; }
base="http://127.0.0.1:$compose_port"
wait_live "$base"
key=$(configure "${PROJECT}_web_1" "http://upstream:9101/v1")
wait_ready "$base"
chat_completion "$base" "$key"
celery_round_trip "${PROJECT}_web_1"
health_checks "${PROJECT}_web_1" "${PROJECT}_worker_1" "${PROJECT}_beat_1"
stop_cleanly 30 "${PROJECT}_web_1"
stop_cleanly 120 "${PROJECT}_worker_1"
stop_cleanly 10 "${PROJECT}_beat_1"
compose down -v -t 10 >/dev/null 2>&1
COMPOSE_UP=0
log "compose run passed ($(since "$started") s)"
