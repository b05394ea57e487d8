// What survives: runtime restarts on the same persisted state, and hibernation, where
// workerd evicts an idle room's object while its sockets stay open and builds a new one on
// the next event.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, afterEach, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer, waitFor } from './support/server.mjs';

const servers = [];
after(() => Promise.all(servers.map((s) => s.stop('SIGKILL'))));
afterEach(assertProtocolKept);

async function startServer(vars = {}) {
  const server = new ChatServer({ vars: { ROOM_INSTANCE_HEADER: '1', ...vars } });
  servers.push(server);
  return server.start();
}

async function instanceOf(server, room) {
  const { headers, body } = await fetchJson(server.url, `/chat/${room}/users`);
  return { instance: headers.get('x-room-instance'), body };
}

/**
 * Leaves the room without events until workerd has evicted its object. Eviction follows a
 * stretch of idleness (about 10 s locally), and it can only be observed by sending an event,
 * which itself restarts the idle clock; so this idles, looks, and idles longer if the object
 * was still there. Returns what the rebuilt object answered.
 */
async function idleUntilEvicted(server, room, before) {
  for (const idleMs of [12_000, 20_000, 30_000]) {
    await delay(idleMs);
    const now = await instanceOf(server, room);
    if (now.instance !== before) return { ...now, idleMs };
  }
  throw new Error(`the object of ${room} was never evicted`);
}

describe('restarts', () => {
  for (const signal of ['SIGTERM', 'SIGKILL']) {
    test(`ids keep growing and history survives a ${signal} restart`, async () => {
      const server = await startServer();
      const room = 'restart';
      const before = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Ann`);
      await before.welcome();
      const sent = [];
      for (const text of ['one', 'two', 'three']) sent.push(await before.sayAndWait(text));

      await server.restart(signal);
      assert.equal((await before.closed).code !== undefined, true, 'the old socket is gone with the runtime');

      const after = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Ann&since=${sent[0].id}`);
      const welcome = await after.welcome();
      assert.equal(welcome.nick, 'Ann', 'the nick of a socket from before the restart is free again');
      assert.deepEqual(welcome.history, sent.slice(1));
      const next = await after.sayAndWait('four');
      assert.ok(next.id > sent[2].id, `id ${next.id} after ${sent[2].id}`);
      assert.ok(next.at >= sent[2].at);
      await after.close();
      await server.stop();
    });
  }
});

describe('hibernation', () => {
  test('an evicted room is rebuilt from its sockets: nicks, users and ids stay right', { timeout: 180_000 }, async () => {
    const server = await startServer();
    const room = 'sleepy';
    const ann = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Ann`);
    await ann.welcome();
    const bob = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Bob`);
    await bob.welcome();
    const leaver = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Leaver`);
    await leaver.welcome();
    bob.send({ type: 'nick', nick: 'Robert' });
    await ann.next({ type: 'renamed', to: 'Robert' });
    const first = await ann.sayAndWait('before sleeping');
    const awake = await instanceOf(server, room);

    // First sleep: the object is evicted with all three sockets open.
    const rebuilt = await idleUntilEvicted(server, room, awake.instance);
    assert.deepEqual(rebuilt.body.users, ['Ann', 'Leaver', 'Robert'], 'users rebuilt from attachments, rename included');
    const second = await bob.sayAndWait('after waking');
    assert.equal(second.id, first.id + 1, 'ids continue from storage');
    assert.equal(second.nick, 'Robert');
    await ann.next({ type: 'message', id: second.id });
    const copy = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=ann`);
    assert.notEqual((await copy.welcome()).nick, 'ann', 'the nick map was rebuilt');
    assert.equal((await copy.next({ type: 'error' })).code, 'nick_taken');
    await copy.close();
    await ann.next({ type: 'left', nick: (copy.frames[0]).nick });

    // Second sleep: a socket closes while the object is evicted, and its close wakes the room.
    const beforeClose = await instanceOf(server, room);
    await delay(rebuilt.idleMs);
    await leaver.close();
    await ann.next({ type: 'left', nick: 'Leaver' });
    await bob.next({ type: 'left', nick: 'Leaver' });
    const last = await ann.sayAndWait('bye');
    await bob.next({ type: 'message', id: last.id });
    assert.equal(ann.count({ type: 'left' }), 2, 'no left for sockets that stayed open');
    assert.equal(ann.count({ type: 'left', nick: 'Leaver' }), 1);
    const afterClose = await instanceOf(server, room);
    assert.notEqual(afterClose.instance, beforeClose.instance, 'the close was delivered to a rebuilt object');
    assert.deepEqual(afterClose.body.users, ['Ann', 'Robert']);

    // The rate limit still holds after waking: a fresh burst, then rate_limited (30 frames, so that
    // a token or two refilled while a loaded machine sends them cannot hide it).
    for (let i = 0; i < 30; i++) ann.say(`burst ${i}`);
    assert.equal((await ann.next({ type: 'error' })).code, 'rate_limited');
    await Promise.all([ann.close(), bob.close()]);
    await server.stop();
  });
});

/**
 * The tables in every room's SQLite database under the server's persisted state, read from the
 * files themselves (write-ahead log included) with Python's sqlite3 module. wrangler dev gives
 * every object it touches a database holding its own `__miniflare_do_name` table; the room's
 * own tables are what matters.
 */
function roomTables(server) {
  const dir = join(server.persistDir, 'v3/do/edge-chat-ChatRoom');
  const files = readdirSync(dir).filter((f) => f.endsWith('.sqlite') && f !== 'metadata.sqlite');
  const script = `
import json, sqlite3, sys
out = {}
for path in sys.argv[1:]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out[path] = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != '__miniflare_do_name'")]
print(json.dumps(out))`;
  const tables = JSON.parse(execFileSync('python3', ['-c', script, ...files.map((f) => join(dir, f))]).toString());
  return Object.values(tables);
}

describe('rooms that end', () => {
  // 0.00005 days is 4.32 s.
  const TTL_DAYS = '0.00005';

  test('reading users and history of 200 unknown rooms stores nothing', { timeout: 60_000 }, async () => {
    const server = await startServer();
    for (let i = 0; i < 200; i++) {
      const [users, history] = await Promise.all([
        fetch(`${server.url}/chat/nobody-${i}/users`).then((r) => r.json()),
        fetch(`${server.url}/chat/nobody-${i}/history`).then((r) => r.json()),
      ]);
      assert.equal(users.count, 0);
      assert.deepEqual(history.messages, []);
    }
    const unknown = roomTables(server);
    assert.ok(unknown.length >= 200, `${unknown.length} databases: each object was touched`);
    assert.deepEqual(unknown.filter((tables) => tables.length > 0), [], 'and none holds a table');
    // The check sees a room that did store something.
    const writer = await ChatClient.connect(`${server.wsUrl}/chat/somebody`);
    await writer.welcome();
    await writer.sayAndWait('stored');
    assert.equal(roomTables(server).filter((tables) => tables.includes('messages')).length, 1);
    await writer.close();
    await server.stop();
  });

  test('a room idle for ROOM_TTL_DAYS deletes its storage; a room with a socket keeps it', { timeout: 60_000 }, async () => {
    const server = await startServer({ ROOM_TTL_DAYS: TTL_DAYS });
    const history = async (room) => (await (await fetch(`${server.url}/chat/${room}/history`)).json()).messages;

    // "kept": its last socket leaves first (setting its alarm), then somebody comes back and stays.
    const first = await ChatClient.connect(`${server.wsUrl}/chat/kept`);
    await first.welcome();
    const keptMessage = await first.sayAndWait('still here later');
    await first.close();
    const stayer = await ChatClient.connect(`${server.wsUrl}/chat/kept`);
    await stayer.welcome();

    // "idle": its last socket leaves after kept's, so its alarm is due after kept's.
    const leaver = await ChatClient.connect(`${server.wsUrl}/chat/idle`);
    await leaver.welcome();
    await leaver.sayAndWait('gone after the TTL');
    await leaver.close();
    assert.equal((await history('idle')).length, 1);

    await waitFor(async () => (await history('idle')).length === 0, { timeoutMs: 30_000, what: "idle's history to be deleted" });
    assert.deepEqual(await history('kept'), [keptMessage], 'the room with a socket kept its history');
    const tables = roomTables(server);
    assert.equal(tables.filter((t) => t.includes('messages')).length, 1, "only kept's messages table is left");
    assert.ok(tables.some((t) => t.length === 0), "idle's database was emptied");
    // A deleted room starts afresh and works.
    const back = await ChatClient.connect(`${server.wsUrl}/chat/idle`);
    assert.deepEqual((await back.welcome()).history, []);
    assert.equal((await back.sayAndWait('new life')).id, 1);
    await Promise.all([back.close(), stayer.close()]);
    await server.stop();
  });
});
