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
say "building the Worker (release WASM)"
env "${WASM_ENV[@]}" \
  WASM_BINDGEN_BIN="$(command -v wasm-bindgen)" \
  WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt" \
  ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild" \
  worker-build --release >&2
# wasm-bindgen's import names carry a hash each: shorter ones, in the module and the JS glue alike.
node scripts/short-imports.mjs build/index_bg.wasm build/index.js
# worker-build keeps the name section (function names, ~80 KB) for readable stack traces; the
# Worker logs none, and every cold start would validate them. Same features as worker-build's own pass.
# -Oz after worker-build's -O takes 2.2 KB more off the gzipped module. --low-memory-unused (1.2 KB):
# rustc's wasm32 layout puts the stack first, so nothing lives below address 1024. The inlining limits
# are worker-build's (Cargo.toml, for the cold start); without them here -Oz would inline every
# one-caller function again, which also made the module 5.5 KB larger.
say "stripping names from the WASM, optimising for size"
features=(mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types exception-handling)
"$ROOT/node_modules/.bin/wasm-opt" build/index_bg.wasm "${features[@]/#/--enable-}" -Oz --always-inline-max-function-size=6 --one-caller-inline-max-function-size=100 --low-memory-unused \
  --strip-debug --strip-producers -o build/index_bg.wasm
touch build/index.js
