#!/usr/bin/env bash
# Runs the service locally for real: RabbitMQ on 127.0.0.1:5672 (started or
# installed when absent), an SMTP server on 127.0.0.1:1025 and a webhook
# receiver on 127.0.0.1:8025 that print what they receive, then
# `flatrender-notify serve --config config/local.toml` until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_rabbitmq

cargo build --locked --bins --workspace
mkdir -p target/local
./target/debug/local-smtp 127.0.0.1:1025 >target/local/mail.log 2>&1 &
smtp_pid=$!
./target/debug/local-webhook 127.0.0.1:8025 >target/local/webhooks.log 2>&1 &
webhook_pid=$!
trap 'kill $smtp_pid $webhook_pid 2>/dev/null || true' EXIT

echo "mail received:     target/local/mail.log" >&2
echo "webhooks received: target/local/webhooks.log" >&2
echo "publish a test notification: scripts/publish-example.sh" >&2
./target/debug/flatrender-notify serve --config config/local.toml
