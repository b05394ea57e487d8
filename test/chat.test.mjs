// The chat protocol end to end: real WebSockets against the built Worker in workerd.
// Each test uses its own room, so tests cannot see each other's traffic.

import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson, httpProblem } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS, waitFor } from './support/server.mjs';

// Every socket here comes from 127.0.0.1; test/abuse.test.mjs checks the per-client limits.
const server = new ChatServer({ vars: { ALLOWED_ORIGINS: 'http://friend.example', ...MANY_CLIENTS_ONE_ADDRESS } });
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(() => server.start());
after(() => server.stop());
afterEach(assertProtocolKept);

function join(room, query = '', options = {}) {
  return ChatClient.connect(`${server.wsUrl}/chat/${room}${query}`, options);
}

/** GETs a route; its JSON answer is checked against openapi.yaml. */
function getJson(path) {
  return fetchJson(server.url, path);
}

/** A GET with the path sent exactly as written, bypassing URL normalisation; a JSON answer is checked. */
function rawGet(path, headers = {}) {
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port: server.port, path, headers }, (response) => {
      let body = '';
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => {
        const contentType = response.headers['content-type'];
        const problem = contentType?.startsWith('application/json')
          ? httpProblem({ path, status: response.statusCode, contentType, body: JSON.parse(body) })
          : null;
        if (problem) fail(new Error(problem));
        else done({ status: response.statusCode, body });
      });
    });
    req.on('error', fail);
    req.end();
  });
}

/** A flat object as Python's json.dumps writes it: `, ` and `: ` between items, every non-ASCII UTF-16 unit escaped. */
function pythonJson(object) {
  const json = `{${Object.entries(object).map(([key, value]) => `${JSON.stringify(key)}: ${JSON.stringify(value)}`).join(', ')}}`;
  return json.replace(/[\u0080-\uffff]/g, (unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

describe('joining and leaving', () => {
  test('welcome, joined, message and left reach the right sockets', async () => {
    const room = freshRoom('basics');
    const ann = await join(room, '?nick=Ann');
    const annWelcome = await ann.welcome();
    assert.deepEqual(annWelcome, {
      type: 'welcome', room, nick: 'Ann', users: ['Ann'], history: [], you: { nick: 'Ann', id: null, role: 'member' },
      seq: 0,
    });

    const bob = await join(room, '?nick=Bob');
    assert.deepEqual((await bob.welcome()).users, ['Ann', 'Bob']);
    const joined = await ann.next({ type: 'joined', nick: 'Bob' });
    assert.equal(typeof joined.at, 'number');
    assert.equal(bob.count({ type: 'joined' }), 0, 'a socket is not told of its own join');

    bob.say('hello Ann');
    const atAnn = await ann.next({ type: 'message', text: 'hello Ann' });
    const atBob = await bob.next({ type: 'message', text: 'hello Ann' });
    assert.deepEqual(atAnn, atBob, 'the sender gets the same frame as everyone else');
    assert.equal(atAnn.nick, 'Bob');
    assert.ok(Number.isInteger(atAnn.id) && atAnn.id >= 1);
    assert.ok(atAnn.at >= joined.at);

    await bob.close();
    await ann.next({ type: 'left', nick: 'Bob' });
    const users = await getJson(`/chat/${room}/users`);
    assert.deepEqual(users.body, { room, users: ['Ann'], count: 1 });
    await ann.close();
  });

  test('a left is broadcast exactly once, also for a client killed without a close frame', async () => {
    const room = freshRoom('leave-once');
    const watcher = await join(room, '?nick=Watcher');
    await watcher.welcome();
    const quitter = await join(room, '?nick=Quitter');
    await quitter.welcome();
    const crasher = await join(room, '?nick=Crasher');
    await crasher.welcome();

    await quitter.close(4000, 'bye now');
    assert.equal(quitter.closeInfo.code, 4000, 'the server completes the handshake with the client\'s code');
    crasher.kill();
    await watcher.next({ type: 'left', nick: 'Quitter' });
    await watcher.next({ type: 'left', nick: 'Crasher' });
    // A later message proves every earlier frame has been delivered.
    await watcher.sayAndWait('still here');
    assert.equal(watcher.count({ type: 'left', nick: 'Quitter' }), 1);
    assert.equal(watcher.count({ type: 'left', nick: 'Crasher' }), 1);
    assert.deepEqual((await getJson(`/chat/${room}/users`)).body.users, ['Watcher']);
    await watcher.close();
  });

  test('a close without a status code (1005 on the server) is answered with a legal 1000', async () => {
    const room = freshRoom('close-codes');
    const watcher = await join(room, '?nick=Watcher');
    await watcher.welcome();
    const client = await join(room, '?nick=Silent');
    await client.welcome();
    client.socket.close();
    assert.equal((await client.closed).code, 1000, 'ws reports 1006 if the server sends a reserved code');
    await watcher.next({ type: 'left', nick: 'Silent' });
    const long = await join(room);
    await long.welcome();
    long.socket.close(4001, 'é'.repeat(61));
    assert.equal((await long.closed).code, 4001);
    await watcher.close();
  });

  test('websocat-style plain text lines are messages', async () => {
    const room = freshRoom('plain');
    const client = await join(room, '?nick=Typist');
    await client.welcome();
    client.send('just typing a line\n');
    const message = await client.next({ type: 'message' });
    assert.equal(message.text, 'just typing a line');
    assert.equal(message.nick, 'Typist');
    await client.close();
  });

  test('ping is answered pong by the runtime', async () => {
    const client = await join(freshRoom('ping'));
    await client.welcome();
    client.send('ping');
    await client.nextRaw('pong');
    assert.equal(client.count({ type: 'message' }), 0, 'ping is not a chat message');
    await client.close();
  });
});

describe('nicknames', () => {
  test('random nicks look like QuiteBraveDragon and are unique', async () => {
    const room = freshRoom('random');
    const clients = await Promise.all(Array.from({ length: 5 }, () => join(room)));
    const nicks = [];
    for (const client of clients) nicks.push((await client.welcome()).nick);
    for (const nick of nicks) assert.match(nick, /^([A-Z][a-z]+){2,3}\d*$/);
    assert.equal(new Set(nicks.map((n) => n.toLowerCase())).size, 5);
    await Promise.all(clients.map((c) => c.close()));
  });

  test('a taken nick (in any case) or an invalid one gets a random nick and says why', async () => {
    const room = freshRoom('taken');
    const ann = await join(room, '?nick=Ann');
    await ann.welcome();
    const copy = await join(room, '?nick=aNN');
    const welcome = await copy.welcome();
    assert.notEqual(welcome.nick.toLowerCase(), 'ann');
    assert.equal((await copy.next({ type: 'error' })).code, 'nick_taken');
    const invalid = await join(room, `?nick=${encodeURIComponent('<script>')}`);
    assert.match((await invalid.welcome()).nick, /^[A-Za-z]+\d*$/);
    assert.equal((await invalid.next({ type: 'error' })).code, 'bad_nick');
    const injected = await join(room, '?nick=Eve%0D%0ASet-Cookie:%20x=1');
    assert.match((await injected.welcome()).nick, /^[A-Za-z]+\d*$/);
    assert.equal((await injected.next({ type: 'error' })).code, 'bad_nick');
    await Promise.all([ann, copy, invalid, injected].map((c) => c.close()));
  });

  test('renames are broadcast, unique and validated', async () => {
    const room = freshRoom('rename');
    const ann = await join(room, '?nick=Ann');
    await ann.welcome();
    const bob = await join(room, '?nick=Bob');
    await bob.welcome();

    bob.send({ type: 'nick', nick: 'ANN' });
    assert.equal((await bob.next({ type: 'error' })).code, 'nick_taken');
    bob.socket.send(JSON.stringify({ type: 'nick', nick: 'no spaces please' }));
    assert.equal((await bob.next({ type: 'error', code: 'bad_nick' })).type, 'error');

    bob.send({ type: 'nick', nick: 'Robert' });
    for (const client of [ann, bob]) {
      const renamed = await client.next({ type: 'renamed' });
      assert.equal(renamed.from, 'Bob');
      assert.equal(renamed.to, 'Robert');
    }
    assert.equal((await bob.sayAndWait('new name')).nick, 'Robert');
    assert.deepEqual((await getJson(`/chat/${room}/users`)).body.users, ['Ann', 'Robert']);
    const carol = await join(room, '?nick=Bob');
    assert.equal((await carol.welcome()).nick, 'Bob', 'the old nick is free again');
    await Promise.all([ann, bob, carol].map((c) => c.close()));
  });

  test('a client cannot post under another nick', async () => {
    const room = freshRoom('spoof');
    const ann = await join(room, '?nick=Ann');
    await ann.welcome();
    const mallory = await join(room, '?nick=Mallory');
    await mallory.welcome();
    mallory.send({ type: 'message', text: 'I am Ann', nick: 'Ann', id: 1, at: 0, from: 'Ann' });
    const message = await ann.next({ type: 'message' });
    assert.equal(message.nick, 'Mallory');
    assert.notEqual(message.at, 0);
    await Promise.all([ann.close(), mallory.close()]);
  });
});

describe('errors', () => {
  test('every bad frame gets its code, the socket stays open, and nothing is stored', async () => {
    const room = freshRoom('errors');
    const client = await join(room, '?nick=Errol');
    await client.welcome();
    const cases = [
      ['x'.repeat(2001), 'too_long'],
      ['é'.repeat(2001), 'too_long'],
      ['a'.repeat(1024 * 1024), 'too_long'],
      [pythonJson({ type: 'message', text: '😀'.repeat(2001) }), 'too_long'],
      [pythonJson({ type: 'message', text: '\u200b \u200c\u200d\n\u2060\ufeff' }), 'empty'],
      ['\u200b\u200b\ufeff', 'empty'],
      ['   ', 'empty'],
      [JSON.stringify({ type: 'message', text: ' \n ' }), 'empty'],
      ['{"type":"message",', 'bad_json'],
      ['{"type":"message"}', 'bad_json'],
      ['{"type":"fly","text":"x"}', 'bad_type'],
      [Buffer.from([1, 2, 3]), 'unsupported'],
      [JSON.stringify({ type: 'nick', nick: 'a b' }), 'bad_nick'],
    ];
    for (const [frame, code] of cases) {
      const from = client.frames.length;
      client.socket.send(frame);
      const error = await client.next({ type: 'error' }, { from });
      assert.equal(error.code, code, `frame ${String(frame).slice(0, 40)}`);
      assert.equal(typeof error.message, 'string');
      assert.doesNotMatch(error.message, /panicked|\.rs:|at \w+ \(/);
    }
    assert.equal(client.socket.readyState, 1, 'still open');
    const ok = await client.sayAndWait('x'.repeat(2000));
    assert.equal(ok.text.length, 2000);
    const history = await getJson(`/chat/${room}/history`);
    assert.deepEqual(history.body.messages.map((m) => m.id), [ok.id], 'only the valid message was stored');
    await client.close();
  });

  test("a Python client's escaped emoji: 1,500 and 2,000 are stored, 2,001 is too_long", async () => {
    const room = freshRoom('python');
    const client = await join(room, '?nick=Py');
    await client.welcome();
    const frame = pythonJson({ type: 'message', text: '😀'.repeat(2000) });
    assert.ok(frame.length > 24_000 && frame.startsWith('{"type": "message", "text": "\\ud83d\\ude00'), frame.slice(0, 50));
    for (const count of [1500, 2000]) {
      const text = '😀'.repeat(count);
      const from = client.frames.length;
      client.socket.send(pythonJson({ type: 'message', text }));
      const echo = await client.next((f) => f.type === 'message' || f.type === 'error', { from });
      assert.equal(echo.text, text, `${count} emoji: ${echo.code}`);
    }
    const from = client.frames.length;
    client.socket.send(pythonJson({ type: 'message', text: '😀'.repeat(2001) }));
    assert.equal((await client.next({ type: 'error' }, { from })).code, 'too_long');
    const history = await getJson(`/chat/${room}/history`);
    assert.deepEqual(history.body.messages.map((m) => [...m.text].length), [1500, 2000]);
    await client.close();
  });

  test('rate limit: pasting 30 lines at once stores 20, drops 10 with rate_limited, and the socket stays open', async () => {
    const room = freshRoom('rate');
    const flooder = await join(room, '?nick=Flood');
    await flooder.welcome();
    const calm = await join(room, '?nick=Calm');
    await calm.welcome();
    // As websocat sends a pasted text: one plain text frame per line, all at once.
    for (let i = 0; i < 30; i++) flooder.socket.send(`line ${i}`);
    const limited = await flooder.next({ type: 'error', code: 'rate_limited' });
    assert.match(limited.message, /too fast/);
    await calm.sayAndWait('I can still talk');
    // Every frame has been answered once the paste's last error is in.
    await flooder.until((frames) => frames.filter((f) => f.type === 'error' || (f.type === 'message' && f.nick === 'Flood')).length === 30, {
      what: '30 answers to the paste',
    });
    assert.equal(flooder.count({ type: 'message', nick: 'Flood' }), 20);
    assert.equal(flooder.count({ type: 'error', code: 'rate_limited' }), 10);
    // Still open: a line sent once a token is back (one every 200 ms) is stored.
    await waitFor(async () => {
      const from = flooder.frames.length;
      flooder.say('after the paste');
      return (await flooder.next((f) => f.type === 'error' || f.type === 'message', { from })).type === 'message';
    }, { what: 'a message stored after the paste', everyMs: 250 });
    assert.equal(flooder.socket.readyState, 1);
    assert.equal(calm.count({ type: 'left', nick: 'Flood' }), 0);
    await Promise.all([flooder.close(), calm.close()]);
  });

  test('a client that keeps flooding over time is closed with 1008 and its leave announced', async () => {
    const room = freshRoom('flood');
    const flooder = await join(room, '?nick=Flood');
    await flooder.welcome();
    const calm = await join(room, '?nick=Calm');
    await calm.welcome();
    // Fifty a second against a refill of five, until the server closes it.
    let sent = 0;
    const timer = setInterval(() => flooder.socket.readyState === 1 && flooder.say(`spam ${sent++}`), 20);
    const { code, reason } = await flooder.closed;
    clearInterval(timer);
    assert.equal(code, 1008);
    assert.match(reason, /flood/i);
    assert.ok(Buffer.byteLength(reason) <= 123);
    assert.ok(flooder.count({ type: 'error', code: 'rate_limited' }) > 10, 'dropped more than a paste before being closed');
    await calm.next({ type: 'left', nick: 'Flood' });
    await calm.sayAndWait('after the flood');
    assert.equal(calm.count({ type: 'left', nick: 'Flood' }), 1);
    await calm.close();
  });
});

describe('rooms and HTTP routes', () => {
  test('two rooms are isolated from each other', async () => {
    const [roomA, roomB] = [freshRoom('iso-a'), freshRoom('iso-b')];
    const a = await join(roomA, '?nick=Same');
    const b = await join(roomB, '?nick=Same');
    assert.equal((await a.welcome()).nick, 'Same');
    assert.equal((await b.welcome()).nick, 'Same', 'nicks are unique per room only');
    await a.sayAndWait('only in A');
    await b.sayAndWait('only in B');
    assert.equal(a.count({ type: 'message', text: 'only in B' }), 0);
    assert.equal(b.count({ type: 'message', text: 'only in A' }), 0);
    assert.deepEqual((await getJson(`/chat/${roomA}/history`)).body.messages.map((m) => m.text), ['only in A']);
    await Promise.all([a.close(), b.close()]);
  });

  test('/chat is the lobby', async () => {
    const client = await ChatClient.connect(`${server.wsUrl}/chat`);
    assert.equal((await client.welcome()).room, 'lobby');
    await client.close();
  });

  test('bad room names are 400 with a JSON error, on every route', async () => {
    for (const room of ['a%2Fb', '...', 'a%00b', '%C0%AE', 'caf%C3%A9', '%ZZ', 'x'.repeat(65), 'a%0D%0AX-Injected:1']) {
      for (const suffix of ['', '/users', '/history']) {
        const { status, body } = await rawGet(`/chat/${room}${suffix}`, { Upgrade: 'websocket', Connection: 'Upgrade' });
        assert.equal(status, 400, `${room}${suffix}`);
        assert.equal(JSON.parse(body).error.code, 'bad_room');
      }
    }
    const refused = await ChatClient.refusal(`${server.wsUrl}/chat/a%2Fb`);
    assert.equal(refused.status, 400);
  });

  test('dot segments are resolved by the URL parser and never name a room', async () => {
    for (const dots of ['..', '%2E%2E', '.%2e']) {
      const upgrade = await rawGet(`/chat/${dots}`, { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' });
      assert.notEqual(upgrade.status, 101, `/chat/${dots} must not open a socket`);
      assert.equal((await rawGet(`/chat/${dots}/users`)).status, 404, `/chat/${dots}/users is /users`);
    }
  });

  test('chat without an upgrade is 426, unknown paths 404, health 200', async () => {
    const plain = await getJson('/chat/somewhere');
    assert.equal(plain.status, 426);
    assert.equal(plain.body.error.code, 'upgrade_required');
    assert.match(plain.type, /application\/json/);
    const missing = await getJson('/nope/nothing');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'not_found');
    assert.equal((await getJson('/chat/a/b/c')).status, 404);
    assert.equal((await getJson('/health')).status, 200);
  });

  test('Origin: own and listed origins and no origin are allowed, others get 403; listed ones may read history', async () => {
    const room = freshRoom('origin');
    const read = (origin) => fetch(`${server.url}/chat/${room}/history`, { headers: { origin } });
    assert.equal((await read('http://friend.example')).headers.get('access-control-allow-origin'), 'http://friend.example');
    assert.equal((await read('http://evil.example')).headers.get('access-control-allow-origin'), null);
    // The client library's transport fallback reads health from the pages that embed it.
    const health = (origin) => fetch(`${server.url}/health`, { headers: { origin } });
    assert.equal((await health('http://friend.example')).headers.get('access-control-allow-origin'), 'http://friend.example');
    assert.equal((await health('http://evil.example')).headers.get('access-control-allow-origin'), null);
    const refused = await ChatClient.refusal(`${server.wsUrl}/chat/${room}`, { origin: 'http://evil.example' });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.error.code, 'forbidden_origin');
    for (const origin of [undefined, server.url, 'http://friend.example']) {
      const client = await join(room, '', origin ? { origin } : {});
      await client.welcome();
      await client.close();
    }
  });

  test('history: newest N oldest first, limit bounds, and since on join', async () => {
    const room = freshRoom('history');
    const writer = await join(room, '?nick=Writer');
    await writer.welcome();
    const ids = [];
    for (let i = 1; i <= 8; i++) ids.push((await writer.sayAndWait(`m${i}`)).id);
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], 'ids grow strictly');

    const latest = await getJson(`/chat/${room}/history?limit=3`);
    assert.deepEqual(latest.body.messages.map((m) => m.text), ['m6', 'm7', 'm8']);
    const { at, seq } = latest.body.messages[0];
    assert.deepEqual(latest.body.messages[0], { type: 'message', id: ids[5], nick: 'Writer', text: 'm6', at, seq });
    assert.equal(latest.body.room, room);
    assert.equal((await getJson(`/chat/${room}/history`)).body.messages.length, 8);
    for (const bad of ['0', '101', 'x']) {
      const response = await getJson(`/chat/${room}/history?limit=${bad}`);
      assert.equal(response.status, 400);
      assert.equal(response.body.error.code, 'bad_limit');
    }

    const after = await getJson(`/chat/${room}/history?since=${ids[1]}&limit=2`);
    assert.deepEqual(after.body.messages.map((m) => m.text), ['m3', 'm4'], 'since pages forward from an id');
    assert.equal((await getJson(`/chat/${room}/history?since=x`)).body.error.code, 'bad_since');

    const late = await join(room, `?since=${ids[4]}`);
    assert.deepEqual((await late.welcome()).history.map((m) => m.text), ['m6', 'm7', 'm8']);
    const fresh = await join(room);
    assert.deepEqual((await fresh.welcome()).history.map((m) => m.text), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8']);
    const badSince = await ChatClient.refusal(`${server.wsUrl}/chat/${room}?since=abc`);
    assert.equal(badSince.status, 400);
    await Promise.all([writer.close(), late.close(), fresh.close()]);
  });

  test('a welcome and /history of long messages stay within 256 KiB, with whole messages', async () => {
    const room = freshRoom('budget');
    // 100 messages of 2,000 four-byte characters: 800 KB of history, more than the budget.
    const writers = await Promise.all(Array.from({ length: 5 }, () => join(room)));
    await Promise.all(writers.map((w) => w.welcome()));
    const long = (i) => `${i} ${'😀'.repeat(1996)}`;
    for (let round = 0; round < 20; round++) {
      await Promise.all(writers.map((w, i) => w.sayAndWait(long(round * 5 + i))));
    }
    const viewer = await join(room);
    await viewer.welcome();
    const raw = viewer.raw.find((frame) => frame.includes('"type":"welcome"'));
    const history = viewer.frames[0].history;
    assert.ok(Buffer.byteLength(raw) <= 256 * 1024 + 1024, `welcome of ${Buffer.byteLength(raw)} bytes`);
    assert.ok(history.length >= 30 && history.length < 100, `${history.length} messages`);
    assert.ok(history.every((m) => m.text === long(Number(m.text.split(' ')[0]))), 'never a cut message');
    const page = await fetch(`${server.url}/chat/${room}/history?limit=100`);
    const body = await page.text();
    assert.ok(Buffer.byteLength(body) <= 256 * 1024 + 1024);
    assert.deepEqual(JSON.parse(body).messages, history, 'the newest that fit, in both');
    await Promise.all([...writers, viewer].map((c) => c.close()));
  });

  test('a room keeps its most recent 1,000 messages and welcomes with at most 100', async () => {
    const room = freshRoom('retention');
    // 60 sockets sending 19 messages each stay within their burst of 20: 1,140 messages.
    const writers = await Promise.all(Array.from({ length: 60 }, () => join(room)));
    await Promise.all(writers.map((w) => w.welcome()));
    for (let round = 0; round < 19; round++) {
      await Promise.all(writers.map((w, i) => w.sayAndWait(`r${round}-w${i}`)));
    }
    const viewer = await join(room);
    const welcome = await viewer.welcome();
    assert.equal(welcome.history.length, 100);
    const stored = await getJson(`/chat/${room}/history?limit=100`);
    assert.equal(stored.body.messages.at(-1).id, welcome.history.at(-1).id);
    const oldest = await join(room, '?since=0');
    const first = (await oldest.welcome()).history[0];
    assert.ok(first.id > 1, 'the oldest messages were trimmed');
    assert.ok(welcome.history.at(-1).id - first.id + 1 >= 1000, 'at least the newest 1,000 are kept');
    await Promise.all([...writers, viewer, oldest].map((c) => c.close()));
  });
});
