// HTTP-only clients: a room read as Server-Sent Events (`GET /chat/ROOM/events`) and posted to over
// plain HTTP, in the same room as native WebSocket clients, against the real runtime.

import assert from 'node:assert/strict';
import { createServer, request as httpRequest } from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { mintTicket } from '../scripts/ticket.mjs';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer, freePort, waitFor } from './support/server.mjs';
import { SseClient } from './support/sse.mjs';
import { launchChromium } from './support/browser.mjs';

const servers = [];
after(() => Promise.all(servers.map((s) => s.stop('SIGKILL'))));
afterEach(assertProtocolKept);

async function startServer(vars = {}) {
  const server = new ChatServer({ vars });
  servers.push(server);
  return server.start();
}

const ADMIN_TOKEN = 'operator-token-for-sse-tests';
const FRIEND = 'https://friend.example';
const TICKET_SECRET = 'sse-test-ticket-secret-of-32-bytes!!';

describe('event streams', () => {
  let server;
  before(async () => {
    server = await startServer({
      MAX_ROOM_STREAMS: '3', SSE_KEEPALIVE_MS: '500', ADMIN_TOKEN, TICKET_SECRET, PRIVATE_ROOMS: 'private-*',
      ALLOWED_ORIGINS: FRIEND,
    });
  });

  const admin = (room, action) =>
    fetchJson(server.url, `/chat/${room}/admin`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      json: action,
    }).then((answer) => answer.status);

  test("a moderator's kick ends a stream with a close event, and a ban refuses the next one", async () => {
    const room = 'modded';
    const observer = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Obs`);
    await observer.welcome();
    const troll = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Troll`);
    await observer.next({ type: 'joined', nick: 'Troll' });
    assert.equal(await admin(room, { action: 'kick', nick: 'Troll' }), 200);
    const closed = await troll.next({ event: 'close' });
    assert.equal(closed.data.code, 4000);
    await troll.done;
    assert.ok(troll.ended, 'the room ended the stream');
    await observer.next({ type: 'left', nick: 'Troll' });
    assert.equal((await troll.say('still here?')).body.error.code, 'bad_session');

    const again = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Troll`);
    assert.equal(await admin(room, { action: 'ban', nick: 'Troll', duration: 60 }), 200);
    assert.equal((await again.next({ event: 'close' })).data.code, 4403);
    const refused = await SseClient.refusal(`${server.url}/chat/${room}/events?nick=Troll`);
    assert.deepEqual([refused.status, refused.body.error.code], [403, 'banned']);
    await observer.sayAndWait('done');
    assert.equal(observer.count({ type: 'left', nick: 'Troll' }), 2, 'one left per stream');
    await observer.close();
  });

  test('a private room needs a ticket for a stream, and posts carry its identity', async () => {
    const room = 'private-sse';
    const refused = await SseClient.refusal(`${server.url}/chat/${room}/events`);
    assert.deepEqual([refused.status, refused.body.error.code], [401, 'ticket_required']);
    const exp = Math.floor(Date.now() / 1000) + 600;
    const ticket = mintTicket({ sub: 'u-sse', name: 'Tess', room, exp }, TICKET_SECRET);
    const reader = await SseClient.connect(`${server.url}/chat/${room}/events?ticket=${ticket}`);
    assert.equal(reader.nick, 'Tess');
    assert.deepEqual((await reader.nextFrame({ type: 'welcome' })).you, { nick: 'Tess', id: 'u-sse', role: 'member' });
    const posted = await reader.say('signed');
    assert.equal(posted.status, 201);
    const message = await reader.nextFrame({ type: 'message', id: posted.body.id });
    assert.equal(message.uid, 'u-sse');
    const renamed = await reader.post('nick', 'Other', { contentType: 'text/plain' });
    assert.deepEqual([renamed.status, renamed.body.error.code], [403, 'forbidden'], 'a ticketed nick is the ticket\'s');
    await reader.close();
  });

  test('a stream and a socket chat both ways with the same ids, and see each other join and leave', async () => {
    const ann = await ChatClient.connect(`${server.wsUrl}/chat/mixed?nick=Ann`);
    await ann.welcome();
    const bob = await SseClient.connect(`${server.url}/chat/mixed/events?nick=Bob`);
    assert.equal(bob.nick, 'Bob');
    assert.match(bob.token, /^[0-9a-f]{32}$/);
    assert.equal(bob.events[0].event, 'session', 'the session event comes first');
    const welcome = await bob.nextFrame({ type: 'welcome' });
    assert.deepEqual(welcome.users, ['Ann', 'Bob']);
    await ann.next({ type: 'joined', nick: 'Bob' });

    const posted = await bob.say('hello from a stream');
    assert.equal(posted.status, 201);
    const seenByAnn = await ann.next({ type: 'message', text: 'hello from a stream' });
    assert.equal(seenByAnn.id, posted.body.id);
    assert.equal(seenByAnn.nick, 'Bob');
    const echo = await bob.next((e) => e.event === 'message' && e.data.text === 'hello from a stream');
    assert.equal(echo.id, String(echo.data.seq), "id: is the message's seq");

    const fromAnn = await ann.sayAndWait('hello from a socket');
    const seenByBob = await bob.nextFrame({ type: 'message', text: 'hello from a socket' });
    assert.deepEqual(seenByBob, fromAnn);

    const plain = await bob.post('messages', 'plain text body', { contentType: 'text/plain' });
    assert.equal(plain.status, 201);
    await ann.next({ type: 'message', text: 'plain text body', id: plain.body.id });

    const renamed = await bob.post('nick', { nick: 'Robert' });
    assert.deepEqual([renamed.status, renamed.body], [200, { nick: 'Robert' }]);
    await ann.next({ type: 'renamed', from: 'Bob', to: 'Robert' });

    await bob.close();
    await ann.next({ type: 'left', nick: 'Robert' });
    await ann.sayAndWait('after');
    assert.equal(ann.count({ type: 'left', nick: 'Robert' }), 1, 'the stream left exactly once');
    await ann.close();
  });

  test('a post with a cid posts once, and edits, deletes, reactions, replies and typing flow both ways', async () => {
    const room = 'changes';
    const ann = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Ann`);
    await ann.welcome();
    const bob = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Bob&client=bob-tab`);
    await bob.nextFrame({ type: 'welcome' });

    const posted = await bob.post('messages', { text: 'once', cid: 'c-1' });
    assert.equal(posted.status, 201);
    const own = await bob.next((e) => e.event === 'message' && e.data.id === posted.body.id);
    assert.equal(own.data.cid, 'c-1', "the stream's own echo carries its cid");
    assert.equal(own.id, String(own.data.seq));
    const seen = await ann.next({ type: 'message', id: posted.body.id });
    assert.equal(seen.cid, undefined, 'nobody else gets the cid');
    // Sent again, from the same stream and from a new one of the same client: nothing is posted.
    const again = await bob.post('messages', { text: 'once', cid: 'c-1' });
    assert.deepEqual([again.status, again.body], [200, { id: posted.body.id }]);
    const bobAgain = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Bob2&client=bob-tab`);
    const third = await bobAgain.post('messages', { text: 'once', cid: 'c-1' });
    assert.deepEqual([third.status, third.body], [200, { id: posted.body.id }]);
    const resent = await bobAgain.next((e) => e.event === 'message' && e.data.cid === 'c-1');
    assert.equal(resent.id, undefined, 'a resend does not move the resume position');
    await ann.sayAndWait('sync');
    assert.equal(ann.count({ type: 'message', text: 'once' }), 1, 'posted once');

    const reply = await bob.post('messages', { text: 'and a reply', reply_to: posted.body.id });
    assert.equal((await ann.next({ type: 'message', id: reply.body.id })).reply_to, posted.body.id);
    const edit = await bob.post('messages', { type: 'edit', id: posted.body.id, text: 'once, edited' });
    assert.equal(edit.status, 200);
    const edited = await ann.next({ type: 'edited', id: posted.body.id, text: 'once, edited' });
    assert.deepEqual(edit.body, { id: posted.body.id, seq: edited.seq });
    assert.equal((await bob.next({ event: 'edited' })).id, String(edited.seq), "an edit's id: is its seq");
    assert.equal((await bob.post('messages', { type: 'edit', id: posted.body.id + 1000, text: 'x' })).status, 404);

    ann.send({ type: 'react', id: posted.body.id, emoji: '👍' });
    const reactions = await bob.next({ event: 'reactions' });
    assert.deepEqual([reactions.id, reactions.data.counts], [String(reactions.data.seq), { '👍': 1 }]);
    const bad = await bob.post('messages', { type: 'react', id: posted.body.id, emoji: 'no' });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'bad_emoji']);

    ann.send({ type: 'typing' });
    assert.equal((await bob.next({ event: 'typing' })).data.nick, 'Ann');
    assert.equal((await bob.post('messages', { type: 'typing' })).status, 204);
    await ann.next({ type: 'typing', nick: 'Bob' });
    await bobAgain.nextFrame({ type: 'typing', nick: 'Bob' });
    // A stream's order holds: once a later frame arrived, Bob's own typing would have come before it.
    const later = await ann.sayAndWait('after typing');
    await bob.nextFrame({ type: 'message', id: later.id });
    assert.equal(bob.frames.filter((f) => f.type === 'typing' && f.nick === 'Bob').length, 0, 'typing goes to the others only');

    const gone = await bob.post('messages', { type: 'delete', id: posted.body.id });
    const deleted = await ann.next({ type: 'deleted', id: posted.body.id });
    assert.deepEqual([gone.status, gone.body], [200, { id: posted.body.id, seq: deleted.seq }]);
    assert.equal((await bobAgain.next({ event: 'deleted' })).id, String(deleted.seq));
    await Promise.all([bob.close(), bobAgain.close(), ann.close()]);
  });

  test('posts need the session token of an open stream, are judged like frames, and never echo the token', async () => {
    const reader = await SseClient.connect(`${server.url}/chat/posts/events?nick=Cat`);
    for (const token of [null, 'not-a-token', reader.token.replace(/./, (c) => (c === 'a' ? 'b' : 'a'))]) {
      const refused = await reader.post('messages', { text: 'hi' }, { token });
      assert.deepEqual([refused.status, refused.body.error.code], [401, 'bad_session'], String(token));
    }
    const cases = [
      [{ text: '   ' }, 400, 'empty'],
      [{ text: 'x'.repeat(2001) }, 400, 'too_long'],
      ['{"text":', 400, 'bad_json'],
      [{ text: 'bell\u0007' }, 400, 'bad_text'],
    ];
    for (const [body, status, code] of cases) {
      const refused = await reader.post('messages', body);
      assert.equal(refused.body.error.code, code, JSON.stringify(body));
      assert.equal(refused.status, code === 'too_long' ? 413 : status);
    }
    const huge = await reader.post('messages', 'y'.repeat(20_000), { contentType: 'text/plain' });
    assert.deepEqual([huge.status, huge.body.error.code], [413, 'too_long']);
    const badNick = await reader.post('nick', { nick: 'no spaces allowed' });
    assert.deepEqual([badNick.status, badNick.body.error.code], [400, 'bad_nick']);
    assert.equal(reader.frames.filter((f) => f.type === 'message').length, 0, 'nothing refused was posted');
    const observer = await ChatClient.connect(`${server.wsUrl}/chat/posts?nick=Obs`);
    await observer.welcome();
    await reader.close();
    await observer.next({ type: 'left', nick: 'Cat' });
    const gone = await reader.post('messages', { text: 'too late' });
    assert.deepEqual([gone.status, gone.body.error.code], [401, 'bad_session'], 'a token dies with its stream');
    await observer.close();
  });

  test('without Accept: text/event-stream a stream is 406, and MAX_ROOM_STREAMS caps a room', async () => {
    const plain = await fetch(`${server.url}/chat/capped/events`);
    assert.equal(plain.status, 406);
    assert.equal((await plain.json()).error.code, 'not_acceptable');
    const readers = [];
    for (let i = 0; i < 3; i += 1) readers.push(await SseClient.connect(`${server.url}/chat/capped/events?nick=R${i}`));
    const refused = await SseClient.refusal(`${server.url}/chat/capped/events?nick=R3`);
    assert.deepEqual([refused.status, refused.body.error.code], [429, 'too_many_streams']);
    assert.ok(refused.body.error.message.includes('event streams'));
    const socket = await ChatClient.connect(`${server.wsUrl}/chat/capped?nick=Sock`);
    assert.deepEqual((await socket.welcome()).users, ['R0', 'R1', 'R2', 'Sock'], 'sockets are not capped by it');
    const sent = await socket.sayAndWait('to every stream');
    for (const reader of readers) assert.deepEqual(await reader.nextFrame({ type: 'message', id: sent.id }), sent);
    await readers[0].close();
    await socket.next({ type: 'left', nick: 'R0' });
    const again = await SseClient.connect(`${server.url}/chat/capped/events?nick=R3`);
    assert.equal(again.nick, 'R3', 'a closed stream frees its place');
    await Promise.all([again.close(), readers[1].close(), readers[2].close(), socket.close()]);
  });

  test('pages from allowed origins may read streams and post (CORS); other origins are refused', async () => {
    const reader = await SseClient.connect(`${server.url}/chat/cors/events?nick=Far`, { headers: { origin: FRIEND } });
    assert.equal(reader.response.headers.get('access-control-allow-origin'), FRIEND);
    const preflight = await fetch(`${server.url}/chat/cors/messages`, {
      method: 'OPTIONS',
      headers: { origin: FRIEND, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-edge-chat-session' },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get('access-control-allow-origin'), FRIEND);
    assert.match(preflight.headers.get('access-control-allow-headers'), /x-edge-chat-session/);
    const posted = await fetch(`${server.url}/chat/cors/messages`, {
      method: 'POST',
      headers: { origin: FRIEND, 'content-type': 'text/plain', 'x-edge-chat-session': reader.token },
      body: 'from afar',
    });
    assert.equal(posted.status, 201);
    assert.equal(posted.headers.get('access-control-allow-origin'), FRIEND);
    const evil = { origin: 'https://evil.example' };
    const refused = await SseClient.refusal(`${server.url}/chat/cors/events`, evil);
    assert.deepEqual([refused.status, refused.body.error.code], [403, 'forbidden_origin']);
    const post = await reader.post('messages', { text: 'x' }, { headers: evil });
    assert.deepEqual([post.status, post.body.error.code], [403, 'forbidden_origin']);
    await reader.close();
  });

  test('a flooding poster gets 429s, then its stream ends with close 1008 and one left', async () => {
    const observer = await ChatClient.connect(`${server.wsUrl}/chat/flood?nick=Obs`);
    await observer.welcome();
    const flooder = await SseClient.connect(`${server.url}/chat/flood/events?nick=Flood`);
    const statuses = [];
    for (let round = 0; round < 10 && !flooder.events.some((e) => e.event === 'close'); round += 1) {
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => flooder.say(`spam ${round}.${i}`)));
      statuses.push(...answers.map((answer) => answer.status));
    }
    assert.ok(statuses.includes(201) && statuses.includes(429), statuses.join(','));
    const closed = await flooder.next({ event: 'close' });
    assert.equal(closed.data.code, 1008);
    await observer.next({ type: 'left', nick: 'Flood' });
    assert.equal((await flooder.say('more')).status, 401);
    await observer.close();
  });

  test('a quiet stream gets a comment line on every keep-alive', async () => {
    const reader = await SseClient.connect(`${server.url}/chat/quiet/events`);
    await reader.next({ event: 'comment' }, { timeoutMs: 5_000 });
    await reader.close();
  });
});

describe('resuming', () => {
  test('after a runtime restart, Last-Event-ID resumes exactly where the stream stopped', async () => {
    const server = await startServer();
    const room = 'resume';
    const reader = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Dee`);
    const writer = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Eve&client=eve-tab`);
    await writer.welcome();
    const seen = [];
    for (const text of ['one', 'two']) seen.push(await writer.sayAndWait(text));
    await reader.nextFrame({ type: 'message', text: 'two' });
    const lastEventId = reader.lastEventId;
    assert.equal(lastEventId, String(seen[1].seq));

    await server.restart('SIGKILL');
    await reader.done;
    assert.ok(reader.ended, 'the stream ended with the runtime');
    // The same client (its author) edits, deletes and reacts to what the stream saw, and posts.
    const writerAgain = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Eve&client=eve-tab`);
    await writerAgain.welcome();
    const change = (frame, type) => {
      writerAgain.send(frame);
      return writerAgain.next({ type, id: frame.id });
    };
    await change({ type: 'edit', id: seen[0].id, text: 'one, edited' }, 'edited');
    await change({ type: 'react', id: seen[0].id, emoji: '👍' }, 'reactions');
    const deleted = await change({ type: 'delete', id: seen[1].id }, 'deleted');
    const three = await writerAgain.sayAndWait('three');
    assert.ok(three.seq > deleted.seq);

    // As EventSource reconnects: the same URL, with the last id it saw.
    const resumed = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Dee`, { lastEventId });
    const welcome = await resumed.nextFrame({ type: 'welcome' });
    const state = welcome.history.map(({ id, text, deleted, reactions, edited_at }) => [id, text, !!deleted, reactions, !!edited_at]);
    assert.deepEqual(state, [
      [seen[0].id, 'one, edited', false, { '👍': 1 }, true],
      [seen[1].id, undefined, true, undefined, false],
      [three.id, 'three', false, undefined, false],
    ], 'every message changed after the last event id, as it is now, by id');
    const welcomeEvent = resumed.events.find((e) => e.event === 'welcome');
    assert.equal(welcomeEvent.id, String(welcome.seq), "the welcome's id is its seq");
    assert.equal(welcome.seq, three.seq);
    const bad = await SseClient.refusal(`${server.url}/chat/${room}/events`, { 'last-event-id': 'abc' });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'bad_after']);
    await Promise.all([resumed.close(), writerAgain.close()]);
  });
});

describe('hibernation', () => {
  test('a room with an open stream is not evicted while idle, and the stream still gets what is posted', { timeout: 120_000 }, async () => {
    const server = await startServer({ ROOM_INSTANCE_HEADER: '1' });
    const room = 'awake';
    const instance = async () => (await fetchJson(server.url, `/chat/${room}/users`)).headers.get('x-room-instance');
    const reader = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Owl`);
    const before = await instance();
    // Idleness itself is what is tested: a room of sockets only is evicted after about 10 s of it.
    await delay(15_000);
    assert.equal(await instance(), before, 'the same object: the stream kept it in memory');
    const socket = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Lark`);
    await socket.welcome();
    const sent = await socket.sayAndWait('still listening?');
    assert.deepEqual(await reader.nextFrame({ type: 'message', id: sent.id }), sent);
    await Promise.all([reader.close(), socket.close()]);
  });
});

describe('in Chromium', () => {
  let browser;
  before(async () => {
    browser = await launchChromium();
  });
  after(() => browser?.close());

  test("the browser's own EventSource reads the room, posts, and resumes with Last-Event-ID after a restart", async () => {
    const server = await startServer();
    const room = 'browser-es';
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.url}/health`);
    await page.evaluate((room) => {
      window.seen = [];
      const source = new EventSource(`/chat/${room}/events?nick=Web`);
      window.source = source;
      for (const type of ['session', 'welcome', 'message', 'joined', 'left']) {
        source.addEventListener(type, (event) => window.seen.push({ type, id: event.lastEventId, data: JSON.parse(event.data) }));
      }
    }, room);
    const seen = (type, test = () => true) =>
      waitFor(async () => (await page.evaluate(() => window.seen)).find((e) => e.type === type && test(e.data)), {
        what: `a ${type} event in the page`,
        timeoutMs: 15_000,
      });
    const session = await seen('session');
    assert.equal(session.data.nick, 'Web');
    const socket = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Sock`);
    await socket.welcome();
    await seen('joined', (frame) => frame.nick === 'Sock');
    const posted = await page.evaluate(async ([room, token]) => {
      const response = await fetch(`/chat/${room}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-edge-chat-session': token },
        body: JSON.stringify({ text: 'from the page' }),
      });
      return { status: response.status, body: await response.json() };
    }, [room, session.data.token]);
    assert.equal(posted.status, 201);
    const echoed = await socket.next({ type: 'message', text: 'from the page' });
    assert.equal(echoed.id, posted.body.id);
    const fromSocket = await socket.sayAndWait('from a socket');
    const event = await seen('message', (frame) => frame.id === fromSocket.id);
    assert.equal(event.id, String(fromSocket.seq), "the event's lastEventId is the message's seq");

    await server.restart('SIGKILL');
    const writer = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Sock`);
    await writer.welcome();
    const missed = await writer.sayAndWait('while the page was away');
    // EventSource reconnects by itself, sending the last id it saw as Last-Event-ID.
    const welcomes = async () => (await page.evaluate(() => window.seen)).filter((e) => e.type === 'welcome');
    const resumed = await waitFor(async () => (await welcomes())[1], { what: 'a second welcome', timeoutMs: 30_000 });
    assert.deepEqual(resumed.data.history, [missed], 'exactly what it missed');
    await page.evaluate(() => window.source.close());
    await writer.close();
    await page.context().close();
  });

  test('where WebSocket upgrades are blocked, the page falls back to SSE and posts, and says so', async () => {
    // A reader that goes away is noticed at the next write: a short keep-alive makes that soon.
    const server = await startServer({ SSE_KEEPALIVE_MS: '1000' });
    const proxy = await upgradeBlockingProxy(server.port);
    try {
      const room = 'fallback';
      const page = await (await browser.newContext()).newPage();
      const errors = [];
      page.on('pageerror', (error) => errors.push(String(error)));
      await page.goto(`http://127.0.0.1:${proxy.port}/?room=${room}&nick=Walled`);
      const status = page.locator('.ec-status');
      await page.locator('.ec[data-status="online"]').waitFor({ timeout: 30_000 });
      await waitFor(async () => /over HTTP/.test(await status.textContent()), { what: 'the status line to name HTTP' });
      assert.match(await status.textContent(), /WebSockets are blocked/);
      assert.ok(proxy.refusedUpgrades >= 3, `${proxy.refusedUpgrades} upgrades refused before falling back`);

      const native = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Open`);
      assert.ok((await native.welcome()).users.includes('Walled'));
      const input = page.getByLabel(/^Message #/);
      await input.fill('through the wall');
      await input.press('Enter');
      const arrived = await native.next({ type: 'message', text: 'through the wall', nick: 'Walled' });
      await page.locator('.ec-msg .ec-text').filter({ hasText: 'through the wall' }).first().waitFor();
      await native.sayAndWait('over the wall');
      await page.locator('.ec-msg .ec-text').filter({ hasText: 'over the wall' }).first().waitFor();
      assert.equal(native.count({ type: 'message', text: 'through the wall' }), 1, `posted once (#${arrived.id})`);
      assert.deepEqual(errors, []);
      await page.context().close();
      await native.next({ type: 'left', nick: 'Walled' });
      await native.close();
    } finally {
      proxy.close();
    }
  });
});

/** An HTTP proxy to wrangler that refuses every WebSocket upgrade, as some corporate proxies do. */
async function upgradeBlockingProxy(targetPort) {
  const port = await freePort();
  const proxy = createServer((incoming, outgoing) => {
    const forwarded = httpRequest(
      { host: '127.0.0.1', port: targetPort, method: incoming.method, path: incoming.url, headers: incoming.headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode, answer.headers);
        answer.pipe(outgoing);
      },
    );
    forwarded.on('error', () => outgoing.destroy());
    outgoing.on('close', () => forwarded.destroy());
    incoming.pipe(forwarded);
  });
  const state = { port, refusedUpgrades: 0, close: () => proxy.close() };
  proxy.on('upgrade', (_request, socket) => {
    state.refusedUpgrades += 1;
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
  });
  await new Promise((done) => proxy.listen(port, '127.0.0.1', done));
  return state;
}
