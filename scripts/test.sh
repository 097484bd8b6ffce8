#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against the real
# RabbitMQ on 127.0.0.1:5672, Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (started here when they are not running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_rabbitmq
ensure_redis
ensure_postgres
cargo test --workspace --locked "$@"
