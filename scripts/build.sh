#!/usr/bin/env bash
# Builds the Worker into build/ (index.js + index_bg.wasm) unless it is already newer than
# every source it comes from, so that `wrangler dev` and the tests start at once on a second run.
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$ROOT"

up_to_date() {
  [ -f build/index.js ] || return 1
  # src/client holds the browser client, served as static assets: no WASM rebuild for it.
  [ -z "$(find src Cargo.toml Cargo.lock -path src/client -prune -o -newer build/index.js -print -quit)" ]
}

if [ "${FORCE_BUILD:-}" != 1 ] && up_to_date; then
  say "build/ is up to date"
  exit 0
fi

ensure_build_tools
build_worker
touch build/index.js
