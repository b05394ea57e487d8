// Renames the WASM module's imports from the JS glue, in the module and in the glue alike:
// wasm-bindgen names each `__wbg_NAME_HASH` with a 16-hex-digit hash of its own, about 150 of them
// that gzip cannot shrink (2.3 KB of the gzipped module). Each becomes `NAME` (`NAME_2`... where
// two share a name), still readable in a stack trace.
// Usage: node scripts/short-imports.mjs build/index_bg.wasm build/index.js
import { readFileSync, writeFileSync } from 'node:fs';

const GLUE_MODULE = './index_bg.js';
const HASHED = /^__wbg_(?:__wbindgen_)?(.+)_[0-9a-f]{16}$/;
// The glue names an import as a key of an object literal.
const KEY = /^[A-Za-z_$][\w$]*$/;

const [wasmPath, jsPath] = process.argv.slice(2);
const wasm = readFileSync(wasmPath);
let js = readFileSync(jsPath, 'utf8');

function fail(why) {
  console.error(`short-imports: ${why}; nothing renamed`);
  process.exit(1);
}

// Reading: `at` moves past what is read.
let at = 0;
const byte = () => wasm[at++];
function leb() {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    const b = byte();
    result |= BigInt(b & 0x7f) << shift;
    shift += 7n;
    if (b < 0x80) return result;
  }
}
function name() {
  const length = Number(leb());
  const text = wasm.toString('utf8', at, at + length);
  at += length;
  return text;
}
// A value or reference type: one byte, or a nullable/non-nullable reference and its heap type.
function valueType() {
  const b = byte();
  if (b === 0x63 || b === 0x64) leb();
}
function limits() {
  const flags = byte();
  leb();
  if (flags & 1) leb();
}
function importDescription(kind) {
  switch (kind) {
    case 0: leb(); break; // function: type index
    case 1: valueType(); limits(); break; // table
    case 2: limits(); break; // memory
    case 3: valueType(); byte(); break; // global: type, mutability
    case 4: byte(); leb(); break; // tag: attribute, type index
    default: fail(`unknown import kind ${kind}`);
  }
}

function encodeLeb(value) {
  const bytes = [];
  let rest = BigInt(value);
  do {
    let b = Number(rest & 0x7fn);
    rest >>= 7n;
    if (rest !== 0n) b |= 0x80;
    bytes.push(b);
  } while (rest !== 0n);
  return Buffer.from(bytes);
}
const encodeName = (text) => {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([encodeLeb(bytes.length), bytes]);
};

if (wasm.readUInt32LE(0) !== 0x6d736100) fail(`${wasmPath} is not a WASM module`);
at = 8;
let section = null;
while (at < wasm.length) {
  const start = at;
  const id = byte();
  const size = Number(leb());
  if (id === 2) {
    section = { start, body: at, end: at + size };
    break;
  }
  at += size;
}
if (!section) fail('no import section');

at = section.body;
const count = Number(leb());
const entries = [];
// Not as keys of the imports object: `__proto__` would set its prototype, `then` make it a thenable.
const used = new Set(['__proto__', 'then']);
for (let i = 0; i < count; i++) {
  const module = name();
  const field = name();
  const descriptionStart = at;
  importDescription(byte());
  entries.push({ module, field, description: wasm.subarray(descriptionStart, at) });
  used.add(field);
}
if (at !== section.end) fail('the import section did not read to its end');

const renamed = new Map();
for (const entry of entries) {
  const match = entry.module === GLUE_MODULE && HASHED.exec(entry.field);
  if (!match || !KEY.test(match[1]) || renamed.has(entry.field)) continue;
  let short = match[1];
  for (let n = 2; used.has(short); n++) short = `${match[1]}_${n}`;
  used.add(short);
  renamed.set(entry.field, short);
}

// Each hashed name is unique, and the glue names each import once, as a key of the imports object.
for (const [long, short] of renamed) {
  const uses = js.split(long).length - 1;
  if (uses !== 1) fail(`${long} is in ${jsPath} ${uses} times, not once`);
  js = js.replace(long, short);
}

const body = Buffer.concat([
  encodeLeb(count),
  ...entries.map(({ module, field, description }) =>
    Buffer.concat([encodeName(module), encodeName(renamed.get(field) ?? field), description])),
]);
const out = Buffer.concat([
  wasm.subarray(0, section.start),
  Buffer.from([2]),
  encodeLeb(body.length),
  body,
  wasm.subarray(section.end),
]);
writeFileSync(wasmPath, out);
writeFileSync(jsPath, js);
console.error(`short-imports: ${renamed.size} imports renamed`);
