// What one client can do to a room, with the default limits: every socket here comes from
// 127.0.0.1, which is one client to the room. A socket that sends its own `CF-Connecting-IP`
// plays another client: wrangler dev keeps a header the client set (Cloudflare's edge
// overwrites it), which is how one machine can stand in for several addresses.

import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { storedMessages } from './support/protocol.mjs';
import { ChatServer } from './support/server.mjs';

const server = new ChatServer();
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(() => server.start());
after(() => server.stop());

/** A socket of another client, at `address`. */
function joinAs(address, room, query = '') {
  return ChatClient.connect(`${server.wsUrl}/chat/${room}${query}`, { headers: { 'CF-Connecting-IP': address } });
}

/** Resolves once the server has either welcomed the socket or closed it. */
function welcomedOrClosed(client) {
  return Promise.race([client.welcome().then(() => true, () => false), client.closed.then(() => false)]);
}

function rawGet(path, headers) {
  return new Promise((done, fail) => {
    // A connection of its own: the dev proxy leaves one that carried a broken upgrade unusable.
    const req = request({ host: '127.0.0.1', port: server.port, path, headers, agent: false }, (response) => {
      let body = '';
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => done({ status: response.statusCode, type: response.headers['content-type'], body }));
    });
    req.on('upgrade', (response, socket) => {
      socket.destroy();
      done({ status: response.statusCode });
    });
    req.on('error', fail);
    req.end();
  });
}

describe('flooding', () => {
  test('25 sockets of one client, reconnecting, store about the per-client allowance; earlier history survives', { timeout: 60_000 }, async () => {
    const room = freshRoom('flood25');
    const owner = await joinAs('203.0.113.10', room, '?nick=Owner');
    await owner.welcome();
    const earlier = [];
    for (let i = 0; i < 15; i++) earlier.push(await owner.sayAndWait(`earlier ${i}`));

    // Three rounds of: open 25 sockets, spend each one's burst of 20, close them all.
    const started = performance.now();
    let attempts = 0;
    let refusedJoins = 0;
    let limited = 0;
    for (let round = 0; round < 3; round++) {
      const sockets = await Promise.all(Array.from({ length: 25 }, () => ChatClient.connect(`${server.wsUrl}/chat/${room}`)));
      const welcomed = await Promise.all(sockets.map(welcomedOrClosed));
      refusedJoins += welcomed.filter((ok) => !ok).length;
      await Promise.all(
        sockets.map(async (socket, i) => {
          if (!welcomed[i]) return;
          for (let n = 0; n < 20; n++) socket.say(`flood ${round}-${i}-${n}`);
          attempts += 20;
          const own = `flood ${round}-${i}-`;
          const answers = (frames) => frames.filter((f) => f.type === 'error' || (f.type === 'message' && f.text.startsWith(own))).length;
          await socket.until((frames) => answers(frames) >= 20 || socket.closeInfo, { what: '20 answers' }).catch(() => {});
          limited += socket.count({ type: 'error', code: 'rate_limited' });
        }),
      );
      await Promise.all(sockets.map((socket) => socket.close()));
    }
    const seconds = (performance.now() - started) / 1000;

    const stored = await storedMessages(server, room);
    const flood = stored.filter((m) => m.text.startsWith('flood'));
    const allowance = 60 + 15 * seconds;
    assert.ok(attempts >= 200 && limited > 0, `${attempts} attempts, ${limited} rate_limited`);
    assert.ok(refusedJoins > 0, 'reconnecting 75 times in seconds is refused too');
    assert.ok(flood.length <= allowance + 15, `${flood.length} flood messages stored in ${seconds.toFixed(1)} s; allowance ${allowance.toFixed(0)}`);
    const kept = new Map(stored.map((m) => [m.id, m]));
    for (const message of earlier) assert.deepEqual(kept.get(message.id), message, 'earlier history is still stored');
    await owner.close();
  });
});

describe('joins', () => {
  // The Worker refuses a broken handshake with 400 bad_upgrade before any room is touched
  // (src/edge/routes.rs, unit-tested). Under wrangler dev the Worker never sees one: the dev
  // proxy re-does every handshake with valid headers of its own, and answers the client's
  // broken one itself with a plain-text 400 once the room has answered. What holds locally,
  // and what this checks, is that a client cannot turn broken handshakes into more presence
  // noise than CLIENT_JOINS_PER_10S allows.
  test('broken handshakes are refused with 400 and cannot flood members with joins', async () => {
    const room = freshRoom('handshake');
    const member = await joinAs('203.0.113.20', room, '?nick=Member');
    await member.welcome();
    const valid = { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' };
    const { 'Sec-WebSocket-Key': _key, ...withoutKey } = valid;
    // (A key of the wrong length the dev proxy lets through; the Worker's unit tests cover it.)
    const broken = [withoutKey, { ...valid, 'Sec-WebSocket-Version': '8' }, { Upgrade: 'websocket' }];
    for (let i = 0; i < 15; i++) {
      const answer = await rawGet(`/chat/${room}?nick=Admin`, broken[i % broken.length]);
      assert.equal(answer.status, 400, JSON.stringify(broken[i % broken.length]));
    }
    // A real join after them: once the member has seen it, it has seen everything before.
    const real = await joinAs('203.0.113.21', room, '?nick=Real');
    await real.welcome();
    await member.next({ type: 'joined', nick: 'Real' });
    const admins = member.count({ type: 'joined', nick: 'Admin' });
    assert.ok(admins <= 10, `${admins} joined frames for 15 broken handshakes`);
    await Promise.all([member.close(), real.close()]);
  });

  test('a client churning sockets gets 4429 after 10 joins in 10 s, and members see no more joins', async () => {
    const room = freshRoom('churn');
    const watcher = await joinAs('203.0.113.30', room, '?nick=Watcher');
    await watcher.welcome();
    const outcomes = [];
    for (let i = 0; i < 15; i++) {
      const socket = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Churn${i}`);
      if (await welcomedOrClosed(socket)) {
        outcomes.push('joined');
        await socket.close();
      } else {
        const { code, reason } = await socket.closed;
        assert.equal(code, 4429, 'the documented "do not reconnect at once" close');
        assert.match(reason, /joins/i);
        assert.equal(socket.frames.length, 1, 'one frame, the error, before the close');
        assert.equal(socket.frames[0].code, 'rate_limited');
        outcomes.push('refused');
      }
    }
    const joins = outcomes.filter((o) => o === 'joined').length;
    assert.ok(joins >= 10 && joins <= 11, `${joins} joins allowed`);
    assert.equal(outcomes.at(-1), 'refused');
    // Another client still gets in, and its join is the last one the watcher sees.
    const other = await joinAs('203.0.113.31', room, '?nick=Other');
    await other.welcome();
    await watcher.next({ type: 'joined', nick: 'Other' });
    assert.equal(watcher.count({ type: 'joined' }), joins + 1);
    await watcher.until((frames) => frames.filter((f) => f.type === 'left').length === joins, { what: `${joins} lefts` });
    await Promise.all([watcher.close(), other.close()]);
  });
});

describe('amplification', () => {
  test('control characters and piled-up combining marks are bad_text; CRLF becomes LF; a 30 MiB frame is too_long', async () => {
    const room = freshRoom('text');
    const client = await joinAs('203.0.113.40', room, '?nick=Texter');
    await client.welcome();
    for (const text of ['\u0001'.repeat(2000), 'bell\u0007', 'esc \u001b[2J', 'c1 \u0085 inside', 'c1 \u009b', `Z${'\u0301'.repeat(5)}`]) {
      const from = client.frames.length;
      client.say(text);
      assert.equal((await client.next({ type: 'error' }, { from })).code, 'bad_text', JSON.stringify(text));
    }
    const from = client.frames.length;
    client.socket.send('y'.repeat(30 * 1024 * 1024));
    assert.equal((await client.next({ type: 'error' }, { from })).code, 'too_long');
    client.say(`tab\there\r\nnext line Z${'\u0301'.repeat(4)}`);
    const ok = await client.next({ type: 'message' });
    assert.equal(client.socket.readyState, 1);
    const stored = await storedMessages(server, room);
    assert.deepEqual(stored.map((m) => m.text), [`tab\there\nnext line Z${'\u0301'.repeat(4)}`]);
    assert.equal(ok.id, stored[0].id);
    await client.close();
  });
});
