#!/usr/bin/env bash
# The wasm32 linker for the Worker's build (toolchain.sh sets it up): runs the real linker
# ($EDGE_CHAT_WASM_LD) without the exports of wasm-bindgen classes that dependencies export and
# this Worker never creates: wasm-streams' IntoUnderlyingSource/Sink/ByteSource (the worker crate's
# streamed bodies; the Worker streams through its own JS) and the worker crate's R2Range,
# MinifyConfig and ContainerStartupOptions. An export keeps its code alive, and the futures it
# starts land in the function table, where no later tool can drop them: only the linker can
# (6.1 KB of the gzipped WASM). wasm-bindgen skips a class method whose describe export is gone;
# nothing can make such an object, since the module no longer imports the JS that would.
set -euo pipefail
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = --export ]; then
    case "${2:-}" in
      *intounderlying* | *r2range* | *minifyconfig* | *containerstartupoptions*)
        shift 2
        continue
        ;;
    esac
  fi
  args+=("$1")
  shift
done
exec "$EDGE_CHAT_WASM_LD" "${args[@]}"
