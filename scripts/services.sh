#!/usr/bin/env bash
# Start or stop the loopback services the registry's tests use against a
# real deployment: redis-server on 127.0.0.1:6399 and a throwaway PostgreSQL
# 15 cluster on 127.0.0.1:54329, data under /var/tmp/promptops-services.
# Installs redis-server and postgresql from Debian when missing (as root).
#
#   eval "$(scripts/services.sh start)"   # exports PROMPTOPS_TEST_*_URL
#   scripts/services.sh stop
set -euo pipefail

BASE=/var/tmp/promptops-services
REDIS_DIR="$BASE/redis"
PG_DIR="$BASE/pg"
REDIS_PORT=6399
PG_PORT=54329
PG_BIN=/usr/lib/postgresql/15/bin

log() { echo "$*" >&2; }

install_missing() {
  if ! command -v redis-server >/dev/null 2>&1 || [ ! -x "$PG_BIN/initdb" ]; then
    log "installing redis-server and postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >/dev/null
    apt-get install -y redis-server postgresql >/dev/null
  fi
}

start_redis() {
  mkdir -p "$REDIS_DIR"
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already running on $REDIS_PORT"
    return
  fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
    --appendonly no --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" \
    --logfile "$REDIS_DIR/redis.log"
  for _ in $(seq 1 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  log "redis did not become ready; see $REDIS_DIR/redis.log"
  exit 1
}

start_pg() {
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  chmod 755 "$BASE"
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync >/dev/null
  fi
  if ! "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
      -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
  fi
  for _ in $(seq 1 100); do
    "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1 && break
    sleep 0.1
  done
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'promptops'" | grep -q 1; then
    createdb -h 127.0.0.1 -p "$PG_PORT" -U postgres promptops
  fi
  # Databases earlier test runs created (one per test) are dropped.
  for db in $(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'po_test_%'"); do
    dropdb -h 127.0.0.1 -p "$PG_PORT" -U postgres --if-exists "$db" >/dev/null 2>&1 || true
  done
}

case "${1:-}" in
  start)
    install_missing
    start_redis
    start_pg
    echo "export PROMPTOPS_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/"
    echo "export PROMPTOPS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/promptops"
    ;;
  stop)
    if [ -f "$REDIS_DIR/redis.pid" ]; then
      kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
      rm -f "$REDIS_DIR/redis.pid"
    fi
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
      runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null || true
    fi
    log "services stopped"
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
