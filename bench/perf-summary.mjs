// Groups the samples of `perf record` files (written by the benchmark when BENCH_PERF names a
// directory) by where the server spent them: the kernel, the runtime's I/O and promises, V8,
// SQLite, the Rust code compiled to WASM, the JS glue, the WASM<->JS wrappers. One column per
// file, in percent of the server's CPU.
//
//   BENCH_PERF=bench/results/perf npm run bench -- fanout
//   node bench/perf-summary.mjs bench/results/perf/rust-fanout-100.data bench/results/perf/reference-fanout-100.data

import { execFileSync } from 'node:child_process';
import { basename } from 'node:path';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node bench/perf-summary.mjs FILE.data...');
  process.exit(2);
}

function category(dso, kind, symbol) {
  if (kind === 'k') return 'kernel (TCP, syscalls)';
  if (symbol.startsWith('JS:')) {
    const name = symbol.slice(3);
    if (/wasm-to-js|js-to-wasm/.test(name)) return 'WASM<->JS wrappers';
    if (name.includes('::') || name.includes('externref shim') || /-\d+-(liftoff|turbofan)$/.test(name)) return 'Rust (WASM)';
    return 'JS (glue, app)';
  }
  if (/Builtins_|v8::/.test(symbol)) return 'V8 runtime and builtins';
  if (/sqlite/i.test(symbol)) return 'SQLite';
  if (/tcmalloc|malloc|free/.test(symbol)) return 'malloc';
  if (/kj::|capnp/.test(symbol)) return 'kj/capnp (I/O, promises)';
  if (/workerd::|jsg/.test(symbol)) return 'workerd API';
  if (dso.startsWith('libc')) return 'libc';
  return 'other';
}

const columns = files.map((file) => {
  const report = execFileSync('perf', ['report', '-i', file, '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
    maxBuffer: 1 << 28,
  });
  const shares = new Map();
  for (const line of report.split('\n')) {
    const match = /^\s+([\d.]+)%\s+(\[JIT\] tid \d+|\S+)\s+\[(.)\]\s+(.*)$/.exec(line);
    if (!match) continue;
    const [, percent, dso, kind, symbol] = match;
    const key = category(dso, kind, symbol);
    shares.set(key, (shares.get(key) ?? 0) + Number(percent));
  }
  return shares;
});

const keys = [...new Set(columns.flatMap((c) => [...c.keys()]))].sort((a, b) => (columns[0].get(b) ?? 0) - (columns[0].get(a) ?? 0));
const names = files.map((f) => basename(f, '.data'));
const width = Math.max(...names.map((n) => n.length), 8);
console.log(`${''.padEnd(28)}${names.map((n) => n.padStart(width + 2)).join('')}`);
for (const key of keys) {
  console.log(`${key.padEnd(28)}${columns.map((c) => (c.get(key) ?? 0).toFixed(1).padStart(width + 2)).join('')}`);
}
