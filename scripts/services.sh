#!/usr/bin/env bash
# Starts RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379 and PostgreSQL
# on 127.0.0.1:5432 unless they already run, installing them from Debian's
# packages when they are missing.
# Sourced by the other scripts.

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_rabbitmq() {
  if port_open 5672; then
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "RabbitMQ is not installed; installing rabbitmq-server from Debian's packages" >&2
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q rabbitmq-server
  fi
  echo "starting RabbitMQ" >&2
  as_root rabbitmq-server -detached
  for _ in $(seq 1 120); do
    if port_open 5672; then
      # The port opens before the broker accepts logins; wait for that too.
      as_root rabbitmqctl await_startup >/dev/null 2>&1 && return 0
    fi
    sleep 1
  done
  echo "RabbitMQ did not start within 120 s; see /var/log/rabbitmq" >&2
  return 1
}

ensure_redis() {
  if port_open 6379; then
    return 0
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "Redis is not installed; installing redis-server from Debian's packages" >&2
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q redis-server
  fi
  echo "starting Redis" >&2
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/notify.log
  for _ in $(seq 1 30); do
    port_open 6379 && return 0
    sleep 1
  done
  echo "Redis did not start within 30 s; see /var/log/redis/notify.log" >&2
  return 1
}

# The store tests connect as postgres to the database `test` on
# 127.0.0.1:5432 without a password, as the development machines allow.
ensure_postgres() {
  if ! port_open 5432; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      echo "PostgreSQL is not installed; installing postgresql from Debian's packages" >&2
      as_root apt-get update -q
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q postgresql
    fi
    echo "starting PostgreSQL" >&2
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 30); do
      port_open 5432 && break
      sleep 1
    done
  fi
  if ! port_open 5432; then
    echo "PostgreSQL did not start on 127.0.0.1:5432" >&2
    return 1
  fi
  # A fresh installation asks for a password on TCP and has no `test`
  # database; let local connections in and create it, as on the dev machines.
  if ! psql "postgres://postgres@127.0.0.1:5432/postgres" -Atc "select 1" >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    echo "allowing password-less local connections in $hba" >&2
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  psql "postgres://postgres@127.0.0.1:5432/postgres" -Atc "select 1 from pg_database where datname = 'test'" | grep -q 1 \
    || psql "postgres://postgres@127.0.0.1:5432/postgres" -c "create database test" >/dev/null
}
