#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against the real
# RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (started here when
# they are not running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_rabbitmq
ensure_redis
cargo test --workspace --locked "$@"
