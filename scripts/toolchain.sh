# Sourced by the other scripts: installs what the build needs, once, and exports the
# environment for the WASM build. Every step checks before it installs, so a second run
# costs a few version checks.
#
# Two paths to a wasm32 standard library, detected rather than assumed:
#   - rustup's `wasm32-unknown-unknown` target, the normal path on a laptop;
#   - where rustup cannot download it, Debian's rustc-web with its std source, building
#     std from source (RUSTC_BOOTSTRAP + build-std). See ../shared/TOOLCHAIN.md.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKER_BUILD_VERSION="0.8.7"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_ready=""
apt_install() {
  if [ -z "$apt_ready" ]; then
    as_root apt-get update -q >&2
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "$@" >&2
}

ensure_node_modules() {
  local stamp="$ROOT/node_modules/.package-lock.json"
  if [ ! -f "$stamp" ] || [ "$ROOT/package-lock.json" -nt "$stamp" ]; then
    say "installing npm packages"
    (cd "$ROOT" && npm ci --no-fund --no-audit >&2)
  fi
}

debian_wasm_std_present() {
  [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] && command -v lld-22 >/dev/null 2>&1
}

rust_src_present() {
  [ -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library" ]
}

# With rustup's std source at hand, std is rebuilt with panic=immediate-abort: a panic traps at
# once instead of formatting its message, which takes the panic machinery and most of the
# formatting code out of the module (16 KB of the gzipped WASM). A panic then logs nothing:
# the hook in `worker.rs` never runs. Without the source, the prebuilt std (panic=abort) is kept.
# -Zlocation-detail=none drops the file names and lines only panic messages would print (1.1 KB);
# -Zfmt-debug=shallow makes derived Debug print only type and variant names (0.9 KB): the Worker
# logs no derived Debug (strings and JS values keep their own Debug).
use_immediate_abort() {
  if ! rust_src_present; then
    say "adding rustup's rust-src, to build std with panic=immediate-abort"
    if ! timeout 120 rustup component add rust-src >&2 || ! rust_src_present; then
      say "no rust-src: building with the prebuilt wasm32 std"
      return
    fi
  fi
  WASM_ENV=(RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort
    "RUSTFLAGS=${RUSTFLAGS:-} -Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=shallow")
}

# Links through scripts/wasm-ld.sh, which leaves out the exports of dependencies' wasm-bindgen
# classes the Worker never uses (see there). $1 is the rustc of the build: the real linker is its rust-lld.
use_export_filter() {
  local rustc="$1" lld
  lld="$("$rustc" --print sysroot)/lib/rustlib/$("$rustc" -vV | sed -n 's/^host: //p')/bin/rust-lld"
  [ -x "$lld" ] || lld="$(command -v rust-lld || true)"
  if [ -z "$lld" ]; then
    say "no rust-lld found: linking with rustc's default linker, unused exports included"
    return
  fi
  WASM_ENV+=(CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$ROOT/scripts/wasm-ld.sh" EDGE_CHAT_WASM_LD="$lld")
}

# Sets WASM_ENV to the variables the wasm32 cargo build needs.
ensure_wasm_target() {
  WASM_ENV=()
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    use_immediate_abort
    use_export_filter rustc
    return
  fi
  if ! debian_wasm_std_present; then
    say "adding the wasm32 target with rustup"
    if timeout 120 rustup target add wasm32-unknown-unknown >&2; then
      use_immediate_abort
      use_export_filter rustc
      return
    fi
    say "rustup could not download the wasm32 std: using Debian's rustc-web and building std from source"
    apt_install rustc-web cargo-web rust-web-src lld-22
  fi
  WASM_ENV=(RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_UNSTABLE_BUILD_STD=std,panic_abort)
  use_export_filter /usr/bin/rustc
}

ensure_worker_build() {
  if [ "$(worker-build --version 2>/dev/null)" != "$WORKER_BUILD_VERSION" ]; then
    say "installing worker-build $WORKER_BUILD_VERSION"
    cargo install --quiet worker-build --version "$WORKER_BUILD_VERSION" >&2
  fi
}

# The CLI must match the wasm-bindgen library exactly, so its version is read from Cargo.lock.
# No --locked: the registry snapshot on some machines lacks a locked transitive version.
ensure_wasm_bindgen() {
  local version
  version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$ROOT/Cargo.lock")"
  if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    say "installing wasm-bindgen-cli $version"
    cargo install --quiet wasm-bindgen-cli --version "$version" >&2
  fi
}

ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian's chromium for the browser tests"
    apt_install chromium
  fi
}

# The storage test reads a room's SQLite file with Python's sqlite3 module.
ensure_python3() {
  if ! command -v python3 >/dev/null 2>&1; then
    say "installing python3 for the storage test"
    apt_install python3
  fi
}

ensure_build_tools() {
  [ -f "$ROOT/Cargo.lock" ] || (cd "$ROOT" && cargo generate-lockfile >&2)
  ensure_node_modules
  ensure_wasm_target
  ensure_worker_build
  ensure_wasm_bindgen
}

# Builds the crate in the current directory into ./build (index.js + index_bg.wasm), the way the
# Worker is built: also bench/fixtures/minimal-rust, so that its cold start compares fairly.
build_worker() {
  run_worker_build
  strip_wasm build/index_bg.wasm
}

# worker-build --release with the tools installed here; arguments go to worker-build.
run_worker_build() {
  say "building the Worker (release WASM) in $PWD"
  env "${WASM_ENV[@]}" \
    WASM_BINDGEN_BIN="$(command -v wasm-bindgen)" \
    WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt" \
    ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild" \
    worker-build --release "$@" >&2
}

# worker-build keeps the name section (function names, ~80 KB) for readable stack traces; the
# Worker logs none, and every cold start would validate them. Same features as worker-build's own pass.
# -Oz after worker-build's -O takes 2.2 KB more off the gzipped module. --low-memory-unused (1.2 KB):
# rustc's wasm32 layout puts the stack first, so nothing lives below address 1024. The inlining limits
# are worker-build's (Cargo.toml, for the cold start); without them here -Oz would inline every
# one-caller function again, which also made the module 5.5 KB larger.
strip_wasm() {
  say "stripping names from $1, optimising for size"
  local features=(mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types exception-handling)
  "$ROOT/node_modules/.bin/wasm-opt" "$1" "${features[@]/#/--enable-}" -Oz --always-inline-max-function-size=6 --one-caller-inline-max-function-size=100 --low-memory-unused \
    --strip-debug --strip-producers -o "$1"
}
