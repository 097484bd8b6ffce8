#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against the real
# RabbitMQ on 127.0.0.1:5672 (started here when it is not running).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_rabbitmq
cargo test --workspace --locked "$@"
