// Moderation end to end: moderators act over their socket, the operator over the admin API,
// and the room, its history and its bans show the result, across restarts and hibernation.

import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, afterEach, before, describe, test } from 'node:test';
import { mintTicket } from '../scripts/ticket.mjs';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS } from './support/server.mjs';

const SECRET = 'moderation-test-secret-of-32-bytes!';
const ADMIN_TOKEN = 'operator-token-for-tests';
const server = new ChatServer({
  vars: { TICKET_SECRET: SECRET, ADMIN_TOKEN, ROOM_INSTANCE_HEADER: '1', ...MANY_CLIENTS_ONE_ADDRESS },
});
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(() => server.start());
after(() => server.stop('SIGKILL'));
afterEach(assertProtocolKept);

function ticket(sub, name, role = 'member') {
  return mintTicket({ sub, name, room: '*', role, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
}

async function join(room, query) {
  const client = await ChatClient.connect(`${server.wsUrl}/chat/${room}${query}`);
  await client.welcome();
  // workerd ends the TCP connection of a socket the room closes at once only once the client
  // has sent something, and ws reports a close only when TCP ends.
  client.send('ping');
  await client.nextRaw('pong');
  return client;
}

const asModerator = (room) => join(room, `?ticket=${ticket('mod-1', 'Mod', 'moderator')}`);

/**
 * The operator's action: `action` is checked against openapi.yaml's request body before it is
 * sent, unless it is a string (deliberately bad input); the answer is checked either way.
 */
async function admin(room, action, token = ADMIN_TOKEN) {
  const request = typeof action === 'string' ? { body: action } : { json: action };
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const { status, body } = await fetchJson(server.url, `/chat/${room}/admin`, { method: 'POST', headers, ...request });
  return { status, body };
}

/** GETs a route; its JSON answer is checked against openapi.yaml. */
async function getJson(path, headers = {}) {
  const { status, headers: answered, body } = await fetchJson(server.url, path, { headers });
  return { status, instance: answered.get('x-room-instance'), body };
}

const adminGet = (room, what) => getJson(`/chat/${room}/admin/${what}`, { authorization: `Bearer ${ADMIN_TOKEN}` });

describe('moderators', () => {
  test('delete leaves a tombstone everywhere: broadcast, history, since replay', async () => {
    const room = freshRoom('delete');
    const mod = await asModerator(room);
    const ann = await join(room, '?nick=Ann');
    const keep = await ann.sayAndWait('keep me');
    const gone = await ann.sayAndWait('regret this');

    const bob = await join(room, '?nick=Bob');
    bob.send({ type: 'delete', id: gone.id });
    assert.equal((await bob.next({ type: 'error' })).code, 'forbidden', 'members cannot delete what others wrote');
    mod.send({ type: 'delete', id: gone.id });
    const deleted = await ann.next({ type: 'deleted', id: gone.id });
    assert.equal(typeof deleted.at, 'number');
    assert.ok(deleted.seq > gone.seq, 'a delete is a change to the history');
    const notice = await ann.next({ type: 'moderated' });
    assert.deepEqual([notice.action, notice.target, notice.by], ['delete', 'Ann', 'Mod']);
    mod.send({ type: 'delete', id: gone.id });
    assert.equal((await mod.next({ type: 'error' })).code, 'not_found', 'already deleted');

    const tombstone = { type: 'message', id: gone.id, nick: 'Ann', deleted: true, at: gone.at, seq: deleted.seq };
    const history = (await getJson(`/chat/${room}/history`)).body.messages;
    assert.deepEqual(history, [keep, tombstone]);
    const replay = await join(room, `?since=${keep.id}`);
    assert.deepEqual(replay.frames[0].history, [tombstone]);
    assert.ok(!JSON.stringify(replay.frames).includes('regret'), 'the text never comes back');
    await Promise.all([mod.close(), ann.close(), bob.close(), replay.close()]);
  });

  test('kick closes every socket of the user with 4000 and one left', async () => {
    const room = freshRoom('kick');
    const mod = await asModerator(room);
    const annTicket = ticket('ann-1', 'Ann');
    const tabs = [await join(room, `?ticket=${annTicket}`), await join(room, `?ticket=${annTicket}`)];
    mod.send({ type: 'kick', nick: 'Ann' });
    for (const tab of tabs) {
      const { code, reason } = await tab.closed;
      assert.equal(code, 4000);
      assert.match(reason, /moderator/);
    }
    await mod.next({ type: 'moderated', action: 'kick', target: 'Ann', by: 'Mod' });
    assert.equal(mod.count({ type: 'left', nick: 'Ann' }), 1);
    assert.deepEqual((await getJson(`/chat/${room}/users`)).body.users, ['Mod']);
    await mod.close();
  });

  test('a ban by an anonymous client\'s address refuses it at the upgrade with 4403 banned', async () => {
    const room = freshRoom('ban-anon');
    const mod = await asModerator(room);
    const troll = await join(room, '?nick=Troll');
    mod.send({ type: 'ban', nick: 'Troll', duration: 600 });
    assert.equal((await troll.closed).code, 4403);
    const again = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Other`);
    assert.equal((await again.next({ type: 'error' })).code, 'banned');
    assert.equal((await again.closed).code, 4403);
    assert.deepEqual((await getJson(`/chat/${room}/users`)).body.users, ['Mod'], 'the refused socket never joined');
    const bans = (await adminGet(room, 'bans')).body.bans;
    assert.equal(bans.length, 1);
    assert.equal(bans[0].nick, 'Troll');
    assert.ok(bans[0].target.address && !JSON.stringify(bans).includes('127.0.0.1'), 'a salted hash, not the IP');
    assert.ok(bans[0].until > Date.now());
    await mod.close();
  });
});

describe('the admin API', () => {
  test('answers 401 without the right token, 400 for a bad action, 404 for an unknown target', async () => {
    const room = freshRoom('admin-auth');
    assert.equal((await admin(room, { action: 'clear' }, 'wrong-token')).status, 401);
    assert.equal((await getJson(`/chat/${room}/admin/bans`)).status, 401);
    const bad = await admin(room, '{"action":"explode"}');
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'bad_action']);
    const unknown = await admin(room, { action: 'kick', nick: 'Nobody' });
    assert.deepEqual([unknown.status, unknown.body.error.code], [404, 'no_such_target']);
  });

  test('mute, slow mode, clear and unban work and are audited', async () => {
    const room = freshRoom('admin-actions');
    const ann = await join(room, `?ticket=${ticket('ann-1', 'Ann')}`);
    const first = await ann.sayAndWait('before the mute');

    assert.equal((await admin(room, { action: 'mute', nick: 'Ann', duration: 600 })).status, 200);
    await ann.next({ type: 'moderated', action: 'mute', target: 'Ann', by: 'admin' });
    ann.say('muted words');
    assert.equal((await ann.next({ type: 'error' })).code, 'forbidden');

    const bob = await join(room, '?nick=Bob');
    assert.equal((await admin(room, { action: 'slow', seconds: 3600 })).status, 200);
    await bob.sayAndWait('one');
    bob.say('two');
    assert.equal((await bob.next({ type: 'error' })).code, 'slow_mode');
    assert.equal((await admin(room, { action: 'slow', seconds: 0 })).status, 200);
    await bob.sayAndWait('two');

    assert.equal((await admin(room, { action: 'clear' })).status, 200);
    await bob.next({ type: 'moderated', action: 'clear', by: 'admin' });
    assert.deepEqual((await getJson(`/chat/${room}/history`)).body.messages, []);
    const after = await bob.sayAndWait('after the clear');
    assert.ok(after.id > first.id + 2, 'ids keep growing after a clear');

    assert.equal((await admin(room, { action: 'ban', nick: 'Bob' })).status, 200);
    assert.equal((await bob.closed).code, 4403);
    const lifted = await admin(room, { action: 'unban', nick: 'bob' });
    assert.equal(lifted.status, 200);
    const back = await join(room, '?nick=Bob');
    await back.sayAndWait('back again');

    const audit = (await adminGet(room, 'audit')).body.entries.map((e) => [e.action, e.target ?? null, e.by]);
    assert.deepEqual(audit, [
      ['unban', 'bob', 'admin'],
      ['ban', 'Bob', 'admin'],
      ['clear', null, 'admin'],
      ['slow', null, 'admin'],
      ['slow', null, 'admin'],
      ['mute', 'Ann', 'admin'],
    ]);
    await Promise.all([ann.close(), back.close()]);
  });

  test('a ban survives hibernation and a SIGKILL restart', { timeout: 120_000 }, async () => {
    const room = freshRoom('ban-lasts');
    const watcher = await join(room, '?nick=Watcher');
    const eveTicket = ticket('eve-1', 'Eve');
    await join(room, `?ticket=${eveTicket}`);
    assert.equal((await admin(room, { action: 'ban', nick: 'Eve' })).status, 200);
    const refused = async () => {
      const eve = await ChatClient.connect(`${server.wsUrl}/chat/${room}?ticket=${eveTicket}`);
      assert.equal((await eve.next({ type: 'error' })).code, 'banned');
      assert.equal((await eve.closed).code, 4403);
    };
    // Hibernation: idle until workerd has evicted the object, then the rebuilt one refuses Eve.
    const asleep = (await getJson(`/chat/${room}/users`)).instance;
    let rebuilt = asleep;
    for (const idleMs of [12_000, 20_000]) {
      await delay(idleMs);
      rebuilt = (await getJson(`/chat/${room}/users`)).instance;
      if (rebuilt !== asleep) break;
    }
    assert.notEqual(rebuilt, asleep, 'the object was evicted');
    await refused();
    await watcher.close();

    await server.restart('SIGKILL');
    await refused();
    assert.equal((await adminGet(room, 'bans')).body.bans[0].target.user, 'eve-1');
  });
});

describe('without ADMIN_TOKEN', () => {
  const bare = new ChatServer();
  before(() => bare.start());
  after(() => bare.stop());

  test('the admin API does not exist', async () => {
    const response = await fetchJson(bare.url, '/chat/lobby/admin', { method: 'POST', json: { action: 'clear' } });
    assert.equal(response.status, 404);
    assert.equal(response.body.error.code, 'not_found');
    const bans = await fetchJson(bare.url, '/chat/lobby/admin/bans', { headers: { authorization: 'Bearer x' } });
    assert.deepEqual([bans.status, bans.body.error.code], [404, 'not_found']);
  });
});
