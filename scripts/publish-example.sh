#!/usr/bin/env bash
# Publishes one render_completed notification for email and one for webhook
# to the locally running service (scripts/run-local.sh), with the contract's
# headers. The mail shows up in target/local/mail.log, the webhook in
# target/local/webhooks.log.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/debug/flatrender-notify
[ -x "$bin" ] || cargo build --locked --bin flatrender-notify
"$bin" publish --config config/local.toml --channel email --template render_completed \
  --to user@example.com --vars templates/samples/render_completed.json
"$bin" publish --config config/local.toml --channel webhook --template render_completed \
  --to http://127.0.0.1:8025/hook --locale de --vars templates/samples/render_completed.json
