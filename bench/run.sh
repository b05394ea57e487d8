#!/usr/bin/env bash
# `npm run bench [-- SCENARIO...]`: builds what the benchmark needs (the Worker's release WASM
# and the native load generator, each only when its sources changed), then runs the scenarios
# against the Rust Worker and the two plain-JS fixtures on bare workerd on loopback.
# BENCH_QUICK=1 shortens every scenario, for iterating. See BENCHMARKS.md.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/toolchain.sh"
cd "$ROOT"

ensure_node_modules
bash scripts/build.sh
say "building the load generator"
cargo build --quiet --release --manifest-path bench/loadgen/Cargo.toml --target-dir bench/target

# The same binary wrangler would run, found the way miniflare finds it.
WORKERD="$(node -p "require('workerd').default")"
args=(--root "$ROOT" --workerd "$WORKERD")
if [ "${BENCH_QUICK:-}" = 1 ]; then
  args+=(--quick)
fi
exec bench/target/release/loadgen "${args[@]}" "$@"
