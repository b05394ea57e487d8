#!/usr/bin/env bash
# Every test: the room core natively with cargo, the client library's type declarations with tsc,
# then the built Worker in workerd over real WebSockets (node's test runner), and the browser client
# in headless Chromium.
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$ROOT"

say "core: cargo test"
cargo test --quiet

bash scripts/build.sh
ensure_chromium
ensure_python3

say "client library types: tsc"
ensure_node_modules
node_modules/.bin/tsc -p test/types

say "Worker in workerd: node --test"
export WRANGLER_SEND_METRICS=false
# One file at a time: each starts its own runtime, and the machine has two cores. A file ends
# when its tests do, even if a failed test left a client reconnecting: a failure must not hang.
node --test --test-concurrency=1 --test-force-exit --test-reporter=spec test/*.test.mjs
