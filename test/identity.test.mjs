// Tickets, private rooms and identity presence, end to end: the Worker checks tickets before
// any room is touched, and a room groups one identity's sockets into one person.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { mintTicket } from '../scripts/ticket.mjs';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS, ROOT, waitFor } from './support/server.mjs';

const SECRET = 'test-secret-that-is-32-bytes-long!!';
const server = new ChatServer({
  vars: { PRIVATE_ROOMS: 'staff-*,secret', TICKET_SECRET: SECRET, ROOM_INSTANCE_HEADER: '1', ...MANY_CLIENTS_ONE_ADDRESS },
});
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(() => server.start());
after(() => server.stop());
afterEach(assertProtocolKept);

const now = () => Math.floor(Date.now() / 1000);

function ticket({ sub = 'u1', name = 'Ann', room = '*', role, exp = now() + 3600, secret = SECRET } = {}) {
  return mintTicket({ sub, name, room, ...(role && { role }), exp }, secret);
}

function join(room, query = '') {
  return ChatClient.connect(`${server.wsUrl}/chat/${room}${query}`);
}

/** GETs a route; its JSON answer is checked against openapi.yaml. */
async function get(path, headers = {}) {
  const { status, headers: answered, body } = await fetchJson(server.url, path, { headers });
  return { status, instance: answered.get('x-room-instance'), body };
}

/** Opens a socket the Worker refuses: one error frame, then a close with a 44xx code. */
async function refusedSocket(room, query) {
  const client = await join(room, query);
  const error = await client.next({ type: 'error' });
  const { code } = await client.closed;
  return { code: error.code, message: error.message, close: code };
}

describe('private rooms', () => {
  test('need a ticket for that room on every route, checked before the room is touched', async () => {
    const room = freshRoom('staff');
    const good = ticket({ room: 'staff-*' });
    const before = await get(`/chat/${room}/users`, { authorization: `Bearer ${good}` });
    assert.equal(before.status, 200);
    assert.ok(before.instance, 'the room answered');

    const cases = [
      ['', 'ticket_required', 4401, 401],
      [`?ticket=${good.slice(0, -2)}xx`, 'bad_ticket', 4401, 401],
      [`?ticket=${ticket({ secret: 'another-secret-of-at-least-32-bytes' })}`, 'bad_ticket', 4401, 401],
      [`?ticket=${ticket({ room: 'staff-*', exp: now() - 3600 })}`, 'ticket_expired', 4401, 401],
      [`?ticket=${ticket({ room: 'lobby' })}`, 'wrong_room', 4403, 403],
    ];
    for (const [query, code, close, status] of cases) {
      const refused = await refusedSocket(room, query);
      assert.deepEqual([refused.code, refused.close], [code, close], query);
      assert.ok(!refused.message.includes('ey'), 'the ticket is never echoed');
      for (const route of ['users', 'history']) {
        const answer = await get(`/chat/${room}/${route}${query}`);
        assert.equal(answer.status, status, `${route}${query}`);
        assert.equal(answer.body.error.code, code);
        assert.equal(answer.instance, null, 'answered by the Worker, not the room');
      }
    }
    const afterwards = await get(`/chat/${room}/users?ticket=${good}`);
    assert.equal(afterwards.instance, before.instance, 'the room was not rebuilt');
    assert.deepEqual(afterwards.body.users, [], 'no refused socket ever joined');

    const member = await join(room, `?ticket=${good}`);
    assert.equal((await member.welcome()).nick, 'Ann');
    await member.close();
  });

  test('a ticket minted with `npm run ticket` opens its room', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['scripts/ticket.mjs', '--sub', 'cli-1', '--name', 'Cli', '--room', 'secret', '--ttl', '600'],
      { cwd: ROOT, env: { ...process.env, TICKET_SECRET: SECRET } },
    );
    const client = await join('secret', `?ticket=${stdout.trim()}`);
    const welcome = await client.welcome();
    assert.deepEqual(welcome.you, { nick: 'Cli', id: 'cli-1', role: 'member' });
    await client.close();
  });
});

describe('identity in a room', () => {
  test('one identity in two tabs is one person: one joined, one left, one users entry', async () => {
    const room = freshRoom('tabs');
    const bob = await join(room, '?nick=Bob');
    await bob.welcome();
    const annTicket = ticket({ sub: 'ann-1', name: 'Ann' });
    const tab1 = await join(room, `?ticket=${annTicket}`);
    assert.deepEqual((await tab1.welcome()).you, { nick: 'Ann', id: 'ann-1', role: 'member' });
    const tab2 = await join(room, `?ticket=${annTicket}&nick=Other`);
    const second = await tab2.welcome();
    assert.equal(second.nick, 'Ann', 'the ticket names the user, not the query');
    assert.deepEqual(second.users, ['Ann', 'Bob']);

    const sent = await tab2.sayAndWait('from the second tab');
    assert.equal(sent.uid, 'ann-1');
    assert.equal((await bob.next({ type: 'message', text: 'from the second tab' })).uid, 'ann-1');
    bob.say('anonymous');
    assert.equal((await tab1.next({ type: 'message', text: 'anonymous' })).uid, undefined);

    await tab1.close();
    assert.deepEqual((await get(`/chat/${room}/users`)).body.users, ['Ann', 'Bob'], 'still here in tab 2');
    await tab2.close();
    await bob.next({ type: 'left', nick: 'Ann' });
    assert.equal(bob.count({ type: 'joined', nick: 'Ann' }), 1);
    assert.equal(bob.count({ type: 'left', nick: 'Ann' }), 1);
    await bob.close();
  });

  test('a ticketed nick is reserved: nobody else joins or renames to it, another identity gets a variant', async () => {
    const room = freshRoom('reserved');
    const ann = await join(room, `?ticket=${ticket({ sub: 'ann-1', name: 'Ann' })}`);
    await ann.welcome();
    const mallory = await join(room, '?nick=ann');
    assert.notEqual((await mallory.welcome()).nick.toLowerCase(), 'ann');
    assert.equal((await mallory.next({ type: 'error' })).code, 'nick_taken');
    mallory.send({ type: 'nick', nick: 'ANN' });
    assert.equal((await mallory.next({ type: 'error' }, { from: 2 })).code, 'nick_taken');
    const namesake = await join(room, `?ticket=${ticket({ sub: 'ann-2', name: 'Ann' })}`);
    const welcome = await namesake.welcome();
    assert.deepEqual([welcome.nick, welcome.you.nick], ['Ann-2', 'Ann-2']);

    await ann.close();
    const later = await join(room, '?nick=Ann');
    await later.welcome();
    assert.equal((await later.next({ type: 'error' })).code, 'nick_taken', 'reserved while Ann is away');
    for (const client of [mallory, namesake, later]) await client.close();
  });

  test('readonly users read and are present, but cannot post or rename', async () => {
    const room = freshRoom('readonly');
    const writer = await join(room, '?nick=Writer');
    await writer.welcome();
    const reader = await join(room, `?ticket=${ticket({ sub: 'r-1', name: 'Reader', role: 'readonly' })}`);
    assert.equal((await reader.welcome()).you.role, 'readonly');
    assert.deepEqual((await get(`/chat/${room}/users`)).body.users, ['Reader', 'Writer']);
    reader.say('let me in');
    assert.equal((await reader.next({ type: 'error' })).code, 'forbidden');
    reader.send({ type: 'nick', nick: 'Sneaky' });
    await reader.until((frames) => frames.filter((f) => f.code === 'forbidden').length === 2, { what: 'two refusals' });
    writer.say('hello reader');
    await reader.next({ type: 'message', text: 'hello reader' });
    assert.deepEqual((await get(`/chat/${room}/history`)).body.messages.map((m) => m.text), ['hello reader']);
    await reader.close();
    await writer.close();
  });

  test('a ticket that expires while connected closes the socket with 4401 on its next frame, storing nothing', async () => {
    const room = freshRoom('expiry');
    // Valid for about two more seconds, counting the minute of allowed clock skew.
    const exp = now() - 58;
    const client = await join(room, `?ticket=${ticket({ sub: 'e-1', name: 'Brief', exp })}`);
    await client.welcome();
    await client.sayAndWait('in time');
    await waitFor(() => Date.now() > (exp + 61) * 1000, { timeoutMs: 5_000, what: 'the ticket to expire' });
    client.say('too late');
    assert.equal((await client.next({ type: 'error' })).code, 'ticket_expired');
    assert.equal((await client.closed).code, 4401);
    assert.deepEqual((await get(`/chat/${room}/history`)).body.messages.map((m) => m.text), ['in time']);
  });
});

describe('misconfiguration', () => {
  const broken = new ChatServer({ vars: { PRIVATE_ROOMS: '*', TICKET_SECRET: 'too-short' } });
  before(() => broken.start());
  after(() => broken.stop());

  test('private rooms without a trustworthy secret fail closed with 503 misconfigured', async () => {
    const users = await fetchJson(broken.url, `/chat/lobby/users?ticket=${ticket()}`);
    assert.equal(users.status, 503);
    assert.equal(users.body.error.code, 'misconfigured');
    const upgrade = await ChatClient.refusal(`${broken.wsUrl}/chat/lobby`);
    assert.equal(upgrade.status, 503);
    assert.equal(upgrade.body.error.code, 'misconfigured');
  });
});

describe('per-address request budget', () => {
  const limited = new ChatServer({ requestsPerMinute: 5 });
  before(() => limited.start());
  after(() => limited.stop());

  test('the platform rate limiter refuses a client over its requests per minute, before any room', async () => {
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await fetchJson(limited.url, '/chat/busy/users')).status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
    const refused = await fetchJson(limited.url, '/chat/busy/users');
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('x-room-instance'), null, 'answered by the Worker');
    assert.equal(refused.body.error.code, 'rate_limited');
    const socket = await ChatClient.connect(`${limited.wsUrl}/chat/busy`);
    assert.equal((await socket.next({ type: 'error' })).code, 'rate_limited');
    assert.equal((await socket.closed).code, 4429);
    assert.equal((await fetchJson(limited.url, '/health')).status, 200, 'health is not counted');
  });
});

describe('sockets per client', () => {
  const capped = new ChatServer({ vars: { MAX_SOCKETS_PER_IP: '2' } });
  before(() => capped.start());
  after(() => capped.stop());

  test('a client holds at most MAX_SOCKETS_PER_IP sockets in a room; the next gets too_many_connections and 4429', async () => {
    const connect = (room) => ChatClient.connect(`${capped.wsUrl}/chat/${room}`);
    const first = await connect('capped');
    const second = await connect('capped');
    await Promise.all([first.welcome(), second.welcome()]);
    const third = await connect('capped');
    assert.equal((await third.next({ type: 'error' })).code, 'too_many_connections');
    assert.equal((await third.closed).code, 4429);
    assert.equal(first.count({ type: 'joined' }), 1, 'nobody was told of the refused socket');
    const elsewhere = await connect('another-room');
    await elsewhere.welcome();
    await second.close();
    await first.next({ type: 'left' });
    const again = await connect('capped');
    await again.welcome();
    for (const client of [first, elsewhere, again]) await client.close();
  });
});
