#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on the addresses Innkeeper uses by default
# (127.0.0.1:5432 and 127.0.0.1:6379). When one does not answer we start it: first the
# machine's own service if it is installed, otherwise a private instance under .run/
# built from the locally installed server binaries. Nothing is downloaded.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run="$here/.run"
PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}

die() { echo "ensure-services: $*" >&2; exit 1; }

pg_up() { pg_isready -q -h 127.0.0.1 -p "$PGPORT" 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

wait_for() {  # wait_for CHECK NAME
  for _ in $(seq 1 60); do "$1" && return 0; sleep 0.5; done
  die "$2 did not come up within 30 s"
}

find_pg_bin() {
  local b
  for b in "$(command -v pg_ctl 2>/dev/null || true)" /usr/lib/postgresql/*/bin/pg_ctl; do
    [ -x "$b" ] && { dirname "$b"; return 0; }
  done
  return 1
}

start_postgres() {
  command -v pg_isready >/dev/null || die "PostgreSQL client tools are missing: apt-get install postgresql"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    local v; v=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "ensure-services: starting the system PostgreSQL $v cluster"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    for _ in $(seq 1 20); do pg_up && return 0; sleep 0.5; done
  fi
  local bin; bin=$(find_pg_bin) || die "PostgreSQL server binaries (initdb, pg_ctl) are missing: apt-get install postgresql"
  local data="$run/pg"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as=(runuser -u postgres --)
  fi
  mkdir -p "$run"
  if [ ! -f "$data/PG_VERSION" ]; then
    echo "ensure-services: initialising a private PostgreSQL in $data"
    mkdir -p "$data"; [ ${#as[@]} -gt 0 ] && chown postgres "$data"
    "${as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  echo "ensure-services: starting the private PostgreSQL on 127.0.0.1:$PGPORT"
  "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-h 127.0.0.1 -p $PGPORT -k $data" start >/dev/null
}

start_redis() {
  command -v redis-server >/dev/null || die "redis-server is missing: apt-get install redis-server"
  mkdir -p "$run/redis"
  echo "ensure-services: starting a private Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$run/redis" --logfile "$run/redis/redis.log" --pidfile "$run/redis/redis.pid"
}

pg_up || { start_postgres; wait_for pg_up PostgreSQL; }
redis_up || { start_redis; wait_for redis_up Redis; }
echo "ensure-services: PostgreSQL 127.0.0.1:$PGPORT and Redis 127.0.0.1:$REDIS_PORT answer"
