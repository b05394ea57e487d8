// What survives: runtime restarts on the same persisted state, and hibernation, where
// workerd evicts an idle room's object while its sockets stay open and builds a new one on
// the next event.

import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, afterEach, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer } from './support/server.mjs';

const servers = [];
after(() => Promise.all(servers.map((s) => s.stop('SIGKILL'))));
afterEach(assertProtocolKept);

async function startServer() {
  const server = new ChatServer();
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

    // The rate limit still holds after waking: a fresh burst, then rate_limited.
    for (let i = 0; i < 21; i++) ann.say(`burst ${i}`);
    assert.equal((await ann.next({ type: 'error' })).code, 'rate_limited');
    await Promise.all([ann.close(), bob.close()]);
    await server.stop();
  });
});
