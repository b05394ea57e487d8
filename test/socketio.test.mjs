// Socket.IO v4 clients (the real socket.io-client from npm) in the same rooms as native sockets:
// both transports, both namespaces, acks, the heartbeat, restarts, and the two NestJS gateways'
// front-ends reproduced from their event names with only the URL changed.

import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { io } from 'socket.io-client';
import { mintTicket } from '../scripts/ticket.mjs';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS, waitFor } from './support/server.mjs';
import { SseClient } from './support/sse.mjs';

const servers = [];
const sockets = [];
after(async () => {
  for (const socket of sockets) socket.disconnect();
  await Promise.all(servers.map((s) => s.stop('SIGKILL')));
});
afterEach(assertProtocolKept);

async function startServer(vars = {}) {
  const server = new ChatServer({ vars: { ...MANY_CLIENTS_ONE_ADDRESS, ROOM_INSTANCE_HEADER: '1', ...vars } });
  servers.push(server);
  return server.start();
}

/**
 * A socket.io-client socket that records every event it receives, so a test waits for the event
 * it expects. `namespace` is '' or '/chat'; the room and nick ride in the URL's query, as a
 * migrated front-end would pass them.
 */
function connect(server, { room, nick, namespace = '', transports, query: extra = {}, ...options } = {}) {
  const query = new URLSearchParams({ room, ...(nick ? { nick } : {}), ...extra });
  const socket = io(`${server.url}${namespace}?${query}`, { forceNew: true, transports, ...options });
  sockets.push(socket);
  socket.events = [];
  socket.onAny((name, ...args) => socket.events.push({ name, args }));
  socket.on('connect_error', (error) => socket.events.push({ name: 'connect_error', args: [error] }));
  return socket;
}

/** Waits for the `name` event whose first argument `match`es, received after the `from`-th event. */
function nextEvent(socket, name, match = () => true, { from = 0, timeoutMs = 10_000 } = {}) {
  return waitFor(
    () => socket.events.slice(from).find((event) => event.name === name && match(event.args[0]))?.args[0],
    { timeoutMs, what: `a ${name} event on ${socket.nsp}`, everyMs: 20 },
  );
}

const connected = (socket) => waitFor(() => socket.connected, { what: 'the socket to connect', everyMs: 20 });

describe('WebSocket-only clients', () => {
  test('join, chat both ways with the same ids, and leave alongside a native socket', async () => {
    const server = await startServer();
    const room = 'ws-only';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();

    const ann = connect(server, { room, nick: 'Ann', transports: ['websocket'] });
    const welcome = await nextEvent(ann, 'welcome');
    assert.equal(ann.id, 'Ann', 'the sid is the nick');
    assert.equal(welcome.nick, 'Ann');
    assert.deepEqual(welcome.users, ['Ann', 'Nat']);
    assert.deepEqual(await nextEvent(ann, 'activeUsers'), ['Ann', 'Nat']);
    await native.next({ type: 'joined', nick: 'Ann' });

    ann.emit('message', 'hello from socket.io');
    const seen = await native.next({ type: 'message', nick: 'Ann' });
    const echo = await nextEvent(ann, 'message', (m) => m.id === seen.id);
    assert.equal(echo.text, 'hello from socket.io');
    assert.equal(echo.clientId, 'Ann');
    assert.equal(echo.msg, 'hello from socket.io');
    assert.equal(echo.user, 'Ann');
    assert.match(echo.time, /^\d\d:\d\d$/);
    const clock = new Date(echo.at);
    assert.equal(echo.time, `${String(clock.getUTCHours()).padStart(2, '0')}:${String(clock.getUTCMinutes()).padStart(2, '0')}`);

    ann.emit('message', { text: 'as an object' });
    await native.next({ type: 'message', text: 'as an object' });
    const reply = await native.sayAndWait('hello from native');
    const got = await nextEvent(ann, 'message', (m) => m.id === reply.id);
    assert.equal(got.nick, 'Nat');

    ann.emit('nick', 'Anne');
    await native.next({ type: 'renamed', from: 'Ann', to: 'Anne' });
    await nextEvent(ann, 'renamed', (r) => r.to === 'Anne');

    // Native sockets see nothing of Engine.IO: every frame they got is a documented JSON frame.
    assert.ok(native.raw.every((frame) => frame.startsWith('{')), native.raw.join('\n'));

    native.close();
    assert.equal((await nextEvent(ann, 'left')).nick, 'Nat');
    assert.deepEqual(await nextEvent(ann, 'user-left'), { message: 'User left the chat: Nat', clientId: 'Nat' });
    assert.equal(await nextEvent(ann, 'userDisconnected'), 'Nat');

    const other = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Obs`);
    await other.welcome();
    assert.deepEqual(await nextEvent(ann, 'user-joined'), { message: 'New user joined the chat: Obs', clientId: 'Obs' });
    assert.equal(await nextEvent(ann, 'userConnected'), 'Obs');
    ann.disconnect();
    await other.next({ type: 'left', nick: 'Anne' });
    other.close();
  });

  test('emitWithAck answers with the stored id, or the error code', async () => {
    const server = await startServer();
    const room = 'acks';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    const ann = connect(server, { room, nick: 'Ann', transports: ['websocket'] });
    await nextEvent(ann, 'welcome');
    const stored = await ann.timeout(5_000).emitWithAck('message', 'acknowledged');
    const seen = await native.next({ type: 'message', text: 'acknowledged' });
    assert.deepEqual(stored, { id: seen.id });
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('message', '   '), { error: 'empty' });
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('message', 'x'.repeat(2_001)), { error: 'too_long' });
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('bogus', {}), { error: 'bad_type' });
    // Without an ack, a refusal is an `error` event, the native error frame.
    ann.emit('message', '');
    assert.equal((await nextEvent(ann, 'error')).code, 'empty');
    // A taken nick: a random one, as for native sockets, and the error after the welcome.
    const twin = connect(server, { room, nick: 'nat', transports: ['websocket'] });
    const welcome = await nextEvent(twin, 'welcome');
    assert.notEqual(welcome.nick.toLowerCase(), 'nat');
    assert.equal(twin.id, welcome.nick);
    assert.equal((await nextEvent(twin, 'error')).code, 'nick_taken');
    native.close();
  });

  test('edits, reactions, typing and cid resends reach Socket.IO clients as events, and their emits reach native sockets', async () => {
    const server = await startServer();
    const room = 'changes';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat&client=nat-tab`);
    await native.welcome();
    const ann = connect(server, { room, nick: 'Ann', transports: ['websocket'], query: { client: 'ann-tab' } });
    await nextEvent(ann, 'welcome');

    // A native edit, reaction and typing are events of the same names and payloads.
    const mine = await native.sayAndWait('typo here');
    native.send({ type: 'edit', id: mine.id, text: 'no typo' });
    const edited = await native.next({ type: 'edited', id: mine.id });
    assert.deepEqual(await nextEvent(ann, 'edited', (e) => e.id === mine.id), edited);
    native.send({ type: 'react', id: mine.id, emoji: '👍' });
    const reactions = await native.next({ type: 'reactions', id: mine.id });
    assert.deepEqual(await nextEvent(ann, 'reactions', (r) => r.id === mine.id), reactions);
    assert.deepEqual(reactions.counts, { '👍': 1 });
    native.send({ type: 'typing' });
    const typing = await nextEvent(ann, 'typing');
    assert.equal(typing.nick, 'Nat');
    assert.ok(typing.until > Date.now() - 60_000);

    // A Socket.IO message with a cid: acked with its id, echoed with its cid to the sender alone; a
    // resend posts nothing and is acked with the original id.
    const first = await ann.timeout(5_000).emitWithAck('message', { text: 'once', cid: 'c-1', reply_to: mine.id });
    const seen = await native.next({ type: 'message', text: 'once' });
    assert.deepEqual(first, { id: seen.id });
    assert.equal(seen.cid, undefined, 'the cid goes to its sender only');
    assert.equal(seen.reply_to, mine.id);
    const echo = await nextEvent(ann, 'message', (m) => m.id === seen.id);
    assert.equal(echo.cid, 'c-1');
    assert.equal(echo.reply_to, mine.id);
    const echoes = () => ann.events.filter((e) => e.name === 'message' && e.args[0].id === seen.id).length;
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('message', { text: 'once', cid: 'c-1' }), { id: seen.id });
    await waitFor(() => echoes() === 2, { what: 'the original message again', everyMs: 20 });
    assert.equal(ann.events.filter((e) => e.name === 'message' && e.args[0].id === seen.id).at(-1).args[0].seq, seen.seq);

    // Its edit, reaction, typing and delete reach the native socket; acks carry the message's id.
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('edit', { id: seen.id, text: 'once, edited' }), { id: seen.id });
    await native.next({ type: 'edited', id: seen.id, text: 'once, edited' });
    await nextEvent(ann, 'edited', (e) => e.id === seen.id);
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('edit', { id: mine.id, text: 'not mine' }), { error: 'forbidden' });
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('react', { id: mine.id, emoji: '👍' }), { id: mine.id });
    assert.deepEqual((await native.next((f) => f.type === 'reactions' && f.counts['👍'] === 2)).id, mine.id);
    ann.emit('typing');
    assert.equal((await native.next({ type: 'typing' }, { from: native.frames.length })).nick, 'Ann');
    assert.deepEqual(await ann.timeout(5_000).emitWithAck('delete', { id: seen.id }), { id: seen.id });
    await native.next({ type: 'deleted', id: seen.id });
    await nextEvent(ann, 'deleted', (d) => d.id === seen.id);
    assert.equal(native.count({ type: 'message', text: 'once' }), 1, 'the resend posted nothing');
    assert.equal(ann.events.filter((e) => e.name === 'typing').length, 1, 'no typing event for its own typing');
    native.close();
  });

  test('one room of all three transports: native, Socket.IO and SSE members get every broadcast, and a sender never its own typing', async () => {
    // A stream's end is noticed when a write to it fails: keep-alives every 500 ms.
    const server = await startServer({ SSE_KEEPALIVE_MS: '500' });
    const room = 'three-ways';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    const ann = connect(server, { room, nick: 'Ann', transports: ['websocket'] });
    await nextEvent(ann, 'welcome');
    const stream = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Sue`);
    await nextEvent(ann, 'joined', (j) => j.nick === 'Sue');
    await native.next({ type: 'joined', nick: 'Sue' });

    // Posted over HTTP by the stream's user: one message, the same id everywhere.
    const posted = await stream.post('messages', { text: 'from the stream', cid: 's-1' });
    assert.equal(posted.status, 201);
    const atNative = await native.next({ type: 'message', text: 'from the stream' });
    assert.equal(atNative.id, posted.body.id);
    assert.equal((await nextEvent(ann, 'message', (m) => m.text === 'from the stream')).id, posted.body.id);
    assert.equal((await stream.nextFrame({ type: 'message', text: 'from the stream' })).cid, 's-1', 'its own copy has its cid');

    // Emitted by Socket.IO with a cid: the stream and the native socket get it without the cid.
    const { id } = await ann.timeout(5_000).emitWithAck('message', { text: 'from socket.io', cid: 'a-1' });
    const atStream = await stream.nextFrame({ type: 'message', id });
    assert.equal(atStream.cid, undefined);
    assert.equal((await native.next({ type: 'message', id })).cid, undefined);

    // Typing reaches everyone but its sender, whatever the transports.
    ann.emit('typing');
    assert.equal((await stream.nextFrame({ type: 'typing' })).nick, 'Ann');
    await native.next({ type: 'typing', nick: 'Ann' });
    assert.equal((await stream.post('messages', { type: 'typing' })).status, 204);
    assert.equal((await nextEvent(ann, 'typing', (t) => t.nick === 'Sue')).nick, 'Sue');
    await native.next({ type: 'typing', nick: 'Sue' });
    native.send({ type: 'edit', id: atNative.id, text: 'not mine' });
    assert.equal((await native.next({ type: 'error' })).code, 'forbidden');
    assert.equal(ann.events.filter((e) => e.name === 'typing' && e.args[0].nick === 'Ann').length, 0);
    assert.equal(stream.frames.filter((f) => f.type === 'typing' && f.nick === 'Sue').length, 0);

    // An edit by the stream's user reaches the other two.
    assert.equal((await stream.post('messages', { type: 'edit', id: posted.body.id, text: 'edited over HTTP' })).status, 200);
    await native.next({ type: 'edited', id: posted.body.id, text: 'edited over HTTP' });
    await nextEvent(ann, 'edited', (e) => e.id === posted.body.id);
    await stream.close();
    await native.next({ type: 'left', nick: 'Sue' });
    assert.equal((await nextEvent(ann, 'left', (l) => l.nick === 'Sue')).nick, 'Sue');
    native.close();
  });

  test('namespace /chat works; other namespaces get CONNECT_ERROR; binary is refused and the socket stays', async () => {
    const server = await startServer();
    const room = 'spaces';
    const chat = connect(server, { room, nick: 'Cat', namespace: '/chat', transports: ['websocket'] });
    assert.equal((await nextEvent(chat, 'welcome')).nick, 'Cat');
    assert.equal(chat.id, 'Cat');
    assert.deepEqual(await nextEvent(chat, 'message', (m) => m.msg?.startsWith('Welcome')), { msg: 'Welcome #Cat', currUserId: 'Cat' });

    const admin = connect(server, { room, namespace: '/admin', transports: ['websocket'] });
    const refused = await nextEvent(admin, 'connect_error');
    assert.equal(refused.message, 'Invalid namespace');

    chat.emit('message', Buffer.from('binary'));
    assert.equal((await nextEvent(chat, 'error')).code, 'unsupported');
    const { id } = await chat.timeout(5_000).emitWithAck('message', 'still here');
    assert.ok(id > 0);
    assert.equal(chat.connected, true);
  });
});

describe('tickets', () => {
  test('private rooms take Socket.IO clients with a ticket, and refuse others with a connect_error carrying the code', async () => {
    const secret = 'a-test-secret-of-at-least-thirty-two-bytes';
    const server = await startServer({ PRIVATE_ROOMS: 'staff', TICKET_SECRET: secret });
    const ticket = mintTicket({ sub: 'u1', name: 'Tess', room: 'staff', exp: Math.floor(Date.now() / 1000) + 600 }, secret);
    for (const transports of [['websocket'], ['polling']]) {
      const member = connect(server, { room: 'staff', transports, query: { ticket } });
      const welcome = await nextEvent(member, 'welcome');
      assert.deepEqual(welcome.you, { nick: 'Tess', id: 'u1', role: 'member' });
      assert.equal(member.id, 'Tess');
      member.disconnect();
    }
    for (const transports of [['websocket'], ['polling']]) {
      const stranger = connect(server, { room: 'staff', transports });
      const refused = await nextEvent(stranger, 'connect_error');
      assert.equal(refused.data?.code, 'ticket_required', transports[0]);
      assert.equal(stranger.active, false, 'socket.io-client does not retry a refused namespace');
    }
  });
});

describe('moderation', () => {
  test('a kicked Socket.IO client is disconnected by the server and does not reconnect, on either transport', async () => {
    const token = 'operator-token-for-sio-tests';
    const server = await startServer({ ADMIN_TOKEN: token });
    const room = 'kicks';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    for (const [nick, transports] of [['Wes', ['websocket']], ['Pol', ['polling']]]) {
      const troll = connect(server, { room, nick, transports });
      await nextEvent(troll, 'welcome');
      let reason = null;
      troll.on('disconnect', (why) => (reason = why));
      const kicked = await fetchJson(server.url, `/chat/${room}/admin`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        json: { action: 'kick', nick },
      });
      assert.equal(kicked.status, 200);
      await native.next({ type: 'left', nick });
      await waitFor(() => reason, { what: `${nick}'s disconnect`, everyMs: 20 });
      assert.equal(reason, 'io server disconnect', transports[0]);
      assert.equal(troll.active, false, 'it does not reconnect');
    }
    native.close();
  });
});

describe('heartbeat', () => {
  test('the room pings: a silent connection stays open past pingInterval + pingTimeout', async () => {
    const server = await startServer({ SIO_PING_INTERVAL_MS: '300', SIO_PING_TIMEOUT_MS: '300' });
    // A first visitor posts and leaves: the emptied room hands its alarm to expiry, and the
    // heartbeat must take it back for the next Socket.IO client.
    const visitor = connect(server, { room: 'quiet', transports: ['websocket'] });
    await nextEvent(visitor, 'welcome');
    await visitor.timeout(5_000).emitWithAck('message', 'stored, so the room has something to expire');
    visitor.disconnect();
    await waitFor(async () => (await fetchJson(server.url, '/chat/quiet/users')).body.count === 0, { what: 'an empty room' });
    const quiet = connect(server, { room: 'quiet', transports: ['websocket'] });
    await nextEvent(quiet, 'welcome');
    // What the open packet advertised (engine.io-client keeps it in these fields).
    assert.equal(quiet.io.engine._pingInterval, 300);
    assert.equal(quiet.io.engine._pingTimeout, 300);
    let pings = 0;
    let dropped = null;
    quiet.io.on('ping', () => pings++);
    quiet.on('disconnect', (reason) => (dropped = reason));
    // Without the room's pings the client gives up after 600 ms; wait for 8 of them (2.4 s).
    await waitFor(() => pings >= 8 || dropped, { what: 'eight pings', everyMs: 20 });
    assert.equal(dropped, null);
    assert.equal(quiet.connected, true);
  });

  test('a room left with only native sockets stops waking and is evicted while idle', async () => {
    const server = await startServer({ SIO_PING_INTERVAL_MS: '300', SIO_PING_TIMEOUT_MS: '300' });
    const room = 'evicted';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    const visitor = connect(server, { room, nick: 'Sio', transports: ['websocket'] });
    await nextEvent(visitor, 'welcome');
    let pings = 0;
    visitor.io.on('ping', () => pings++);
    await waitFor(() => pings >= 2, { what: 'two pings', everyMs: 20 });
    visitor.disconnect();
    await native.next({ type: 'left', nick: 'Sio' });
    const before = (await fetchJson(server.url, `/chat/${room}/users`)).headers.get('x-room-instance');
    // Idleness is the point here: with the heartbeat still armed (every 300 ms) the object
    // would never be evicted; without it workerd evicts it after about 10 s.
    let instance = before;
    for (const idleMs of [12_000, 20_000]) {
      await new Promise((done) => setTimeout(done, idleMs));
      instance = (await fetchJson(server.url, `/chat/${room}/users`)).headers.get('x-room-instance');
      if (instance !== before) break;
    }
    assert.notEqual(instance, before, 'the room was evicted');
    assert.equal(native.closeInfo, null, 'the native socket stayed open through hibernation');
    native.close();
  });
});

describe('hibernation', () => {
  test('a Socket.IO WebSocket outlives its room\'s eviction: the rebuilt room knows its nick and namespaces', async () => {
    const server = await startServer();
    const room = 'hibernating';
    const sio = connect(server, { room, nick: 'Sio', namespace: '/chat', transports: ['websocket'] });
    await nextEvent(sio, 'welcome');
    const before = (await fetchJson(server.url, `/chat/${room}/users`)).headers.get('x-room-instance');
    // Idleness is the point: workerd evicts the object after about 10 s without events (the
    // heartbeat's 30 s pings come later), while the socket stays open.
    let instance = before;
    for (const idleMs of [12_000, 20_000]) {
      await new Promise((done) => setTimeout(done, idleMs));
      instance = (await fetchJson(server.url, `/chat/${room}/users`)).headers.get('x-room-instance');
      if (instance !== before) break;
    }
    assert.notEqual(instance, before, 'the room was evicted');
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    assert.deepEqual((await native.welcome()).users, ['Nat', 'Sio']);
    const { id } = await sio.timeout(5_000).emitWithAck('message', 'after hibernation');
    assert.equal((await native.next({ type: 'message', text: 'after hibernation' })).id, id);
    const reply = await native.sayAndWait('welcome back');
    await nextEvent(sio, 'message', (m) => m.id === reply.id);
    assert.equal(sio.connected, true);
    native.close();
  });
});

describe('long-polling, then the upgrade (what a default io(url) does)', () => {
  test('a default client starts polling, upgrades to WebSocket, and chats with a native socket throughout', async () => {
    const server = await startServer();
    const room = 'default';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    const pol = connect(server, { room, nick: 'Pol' });
    const transports = [];
    pol.io.on('open', () => {
      transports.push(pol.io.engine.transport.name);
      pol.io.engine.on('upgrade', (transport) => transports.push(transport.name));
    });
    assert.deepEqual((await nextEvent(pol, 'welcome')).users, ['Nat', 'Pol']);
    await native.next({ type: 'joined', nick: 'Pol' });
    const first = await native.sayAndWait('before or after the upgrade');
    assert.equal((await nextEvent(pol, 'message', (m) => m.id === first.id)).text, 'before or after the upgrade');
    await waitFor(() => transports.includes('websocket'), { what: 'the upgrade', everyMs: 20 });
    assert.deepEqual(transports, ['polling', 'websocket']);
    const { id } = await pol.timeout(5_000).emitWithAck('message', 'over the upgraded socket');
    assert.equal((await native.next({ type: 'message', text: 'over the upgraded socket' })).id, id);
    const second = await native.sayAndWait('and back');
    await nextEvent(pol, 'message', (m) => m.id === second.id);
    pol.disconnect();
    await native.next({ type: 'left', nick: 'Pol' });
    native.close();
  });

  test('polling only: posts, held polls carrying what piled up, and the heartbeat', async () => {
    const server = await startServer({ SIO_PING_INTERVAL_MS: '300', SIO_PING_TIMEOUT_MS: '300' });
    const room = 'polling';
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    const pol = connect(server, { room, nick: 'Pol', transports: ['polling'] });
    await nextEvent(pol, 'welcome');
    let pings = 0;
    let dropped = null;
    pol.io.on('ping', () => pings++);
    pol.on('disconnect', (reason) => (dropped = reason));
    const sent = [];
    for (let i = 0; i < 5; i++) sent.push(pol.timeout(5_000).emitWithAck('message', `poll ${i}`));
    const ids = (await Promise.all(sent)).map((ack) => ack.id);
    for (let i = 0; i < 5; i++) assert.equal((await native.next({ type: 'message', text: `poll ${i}` })).id, ids[i]);
    const reply = await native.sayAndWait('to the poller');
    await nextEvent(pol, 'message', (m) => m.id === reply.id);
    await waitFor(() => pings >= 6 || dropped, { what: 'six pings', everyMs: 20 });
    assert.equal(dropped, null);
    assert.equal(pol.io.engine.transport.name, 'polling');
    pol.disconnect();
    await native.next({ type: 'left', nick: 'Pol' });
    native.close();
  });

  test('polling answers carry CORS for allowed origins; other origins and unknown sessions are refused', async () => {
    const server = await startServer({ ALLOWED_ORIGINS: 'https://friend.example' });
    const handshake = (origin) =>
      fetch(`${server.url}/socket.io/?EIO=4&transport=polling&room=cors`, { headers: origin ? { origin } : {} });
    const allowed = await handshake('https://friend.example');
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://friend.example');
    const open = JSON.parse((await allowed.text()).slice(1));
    assert.deepEqual(open.upgrades, ['websocket']);
    assert.equal(open.pingInterval, 30_000);
    assert.equal(open.pingTimeout, 60_000);
    // Refusals are checked against openapi.yaml by fetchJson.
    const refused = await fetchJson(server.url, '/socket.io/?EIO=4&transport=polling&room=cors', {
      headers: { origin: 'https://evil.example' },
    });
    assert.deepEqual([refused.status, refused.body.error.code], [403, 'forbidden_origin']);
    const unknown = await fetchJson(server.url, '/socket.io/?EIO=4&transport=polling&room=cors&sid=nosuchsession');
    assert.deepEqual([unknown.status, unknown.body.error.code], [400, 'unknown_session']);
    const wrongVersion = await fetchJson(server.url, '/socket.io/?EIO=3&transport=polling');
    assert.deepEqual([wrongVersion.status, wrongVersion.body.error.code], [400, 'bad_transport']);
    // Posting packets: answered `ok`, and a too large body 413.
    const sid = open.sid;
    const post = (body) =>
      fetch(`${server.url}/socket.io/?EIO=4&transport=polling&room=cors&sid=${sid}`, { method: 'POST', body });
    const ok = await post('40\x1e42["message","posted"]');
    assert.equal(await ok.text(), 'ok');
    const poll = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&room=cors&sid=${sid}`);
    const packets = (await poll.text()).split('\x1e');
    assert.ok(packets[0].startsWith('40{"sid":'), packets[0]);
    assert.ok(packets.some((p) => p.startsWith('42["welcome"')), 'the welcome came in the same answer');
    assert.ok(packets.some((p) => p.startsWith('42["message"') && p.includes('"posted"')), 'and the message');
    const tooLarge = await fetchJson(server.url, `/socket.io/?EIO=4&transport=polling&room=cors&sid=${sid}`, {
      method: 'POST',
      body: '4'.repeat(30_000),
    });
    assert.deepEqual([tooLarge.status, tooLarge.body.error.code], [413, 'payload_too_large']);
    assert.equal(await (await post('1')).text(), 'ok');
  });

  test('a session that stops polling in a busy room is ended once 1,000 packets wait for it', async () => {
    const server = await startServer({ RATE_BURST: '100000', RATE_PER_SECOND: '100000' });
    const base = `${server.url}/socket.io/?EIO=4&transport=polling&room=busy`;
    const { sid } = JSON.parse((await (await fetch(base)).text()).slice(1));
    assert.equal(await (await fetch(`${base}&sid=${sid}`, { method: 'POST', body: '40' })).text(), 'ok');
    const native = await ChatClient.connect(`${server.wsUrl}/chat/busy?nick=Nat`);
    await native.welcome();
    for (let i = 0; i < 1_000; i++) native.say(`piling up ${i}`);
    await native.next({ type: 'message', text: 'piling up 999' });
    // The session never polled: its next poll is Engine.IO's close, and then it is unknown.
    assert.equal(await (await fetch(`${base}&sid=${sid}`)).text(), '1');
    await native.next({ type: 'left' });
    const gone = await fetchJson(server.url, `/socket.io/?EIO=4&transport=polling&room=busy&sid=${sid}`);
    assert.deepEqual([gone.status, gone.body.error.code], [400, 'unknown_session']);
    native.close();
  });
});

describe('restarts', () => {
  test('a client reconnects by itself after a runtime restart and chats on, ids still growing', async () => {
    const server = await startServer();
    const room = 'restart';
    const ann = connect(server, { room, nick: 'Ann', transports: ['websocket'] });
    await nextEvent(ann, 'welcome');
    const before = await ann.timeout(5_000).emitWithAck('message', 'before the restart');
    const from = ann.events.length;
    await server.restart('SIGTERM');
    const welcome = await nextEvent(ann, 'welcome', () => true, { from, timeoutMs: 30_000 });
    assert.equal(welcome.nick, 'Ann');
    assert.ok(welcome.history.some((m) => m.id === before.id && m.text === 'before the restart'));
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    const after = await ann.timeout(5_000).emitWithAck('message', 'after the restart');
    assert.ok(after.id > before.id);
    assert.equal((await native.next({ type: 'message', text: 'after the restart' })).id, after.id);
    native.close();
  });
});

/**
 * The first gateway's front-end (namespace `/`), written from its event names: it announces
 * `user-joined` / `user-left` notices, emits `newMessage` with `{text, clientId}`, and tells its
 * own messages by `message.clientId === socket.id`. Only its server URL changed.
 */
class FirstGatewayFrontEnd {
  constructor(url) {
    this.lines = [];
    this.socket = io(url, { forceNew: true });
    sockets.push(this.socket);
    this.socket.on('user-joined', ({ message }) => this.lines.push({ kind: 'notice', text: message }));
    this.socket.on('user-left', ({ message }) => this.lines.push({ kind: 'notice', text: message }));
    this.socket.on('message', (message) =>
      this.lines.push({ kind: message.clientId === this.socket.id ? 'mine' : 'theirs', text: message.text }),
    );
  }

  send(text) {
    this.socket.emit('newMessage', { text, clientId: this.socket.id });
  }

  line(kind, text) {
    return waitFor(() => this.lines.find((l) => l.kind === kind && l.text === text), { what: `${kind}: ${text}`, everyMs: 20 });
  }
}

/**
 * The second gateway's front-end (namespace `/chat`): it learns its nick from the welcome
 * notice's `currUserId`, keeps the users list from `activeUsers`, `userConnected` and
 * `userDisconnected`, shows `message` events as `{msg, user, time}` lines, and emits `message`
 * with the text.
 */
class SecondGatewayFrontEnd {
  constructor(url) {
    this.lines = [];
    this.users = [];
    this.me = null;
    this.socket = io(url, { forceNew: true });
    sockets.push(this.socket);
    this.socket.on('message', ({ msg, user, time, currUserId }) => {
      if (currUserId) this.me = currUserId;
      this.lines.push(user ? `[${time}] ${user}: ${msg}` : msg);
    });
    this.socket.on('activeUsers', (users) => (this.users = users));
    this.socket.on('userConnected', (nick) => (this.users = [...new Set([...this.users, nick])]));
    this.socket.on('userDisconnected', (nick) => (this.users = this.users.filter((u) => u !== nick)));
  }

  send(text) {
    this.socket.emit('message', text);
  }

  line(match) {
    return waitFor(() => this.lines.find((l) => match.test(l)), { what: `a line like ${match}`, everyMs: 20 });
  }
}

describe('the gateways\' front-ends, only the URL changed', () => {
  test('the first gateway\'s front-end (namespace /) chats with a native client', async () => {
    const server = await startServer();
    const room = 'gateway-one';
    const front = new FirstGatewayFrontEnd(`${server.url}/?room=${room}`);
    await waitFor(() => front.socket.connected, { what: 'the front-end to connect', everyMs: 20 });
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    await front.line('notice', 'New user joined the chat: Nat');
    front.send('hi from the old front-end');
    const got = await native.next({ type: 'message', text: 'hi from the old front-end' });
    assert.equal(got.nick, front.socket.id);
    await front.line('mine', 'hi from the old front-end');
    await native.sayAndWait('hi from native');
    await front.line('theirs', 'hi from native');
    native.close();
    await front.line('notice', 'User left the chat: Nat');
  });

  test('the second gateway\'s front-end (namespace /chat) chats with a native client', async () => {
    const server = await startServer();
    const room = 'gateway-two';
    const front = new SecondGatewayFrontEnd(`${server.url}/chat?room=${room}`);
    await front.line(/^Welcome #/);
    assert.equal(front.me, front.socket.id);
    assert.deepEqual(front.users, [front.me]);
    const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Nat`);
    await native.welcome();
    await front.line(/^Nat connected to the chat$/);
    assert.deepEqual(front.users.sort(), [front.me, 'Nat'].sort());
    front.send('hello from /chat');
    assert.equal((await native.next({ type: 'message', text: 'hello from /chat' })).nick, front.me);
    await front.line(new RegExp(`^\\[\\d\\d:\\d\\d\\] ${front.me}: hello from /chat$`));
    await native.sayAndWait('hello back');
    await front.line(/^\[\d\d:\d\d\] Nat: hello back$/);
    native.close();
    await front.line(/^~ Nat disconnected$/);
    assert.deepEqual(front.users, [front.me]);
  });
});
