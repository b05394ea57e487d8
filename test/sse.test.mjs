// HTTP-only clients: a room read as Server-Sent Events (`GET /chat/ROOM/events`) and posted to over
// plain HTTP, in the same room as native WebSocket clients, against the real runtime.

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept } from './support/protocol.mjs';
import { ChatServer } from './support/server.mjs';
import { SseClient } from './support/sse.mjs';

const servers = [];
after(() => Promise.all(servers.map((s) => s.stop('SIGKILL'))));
afterEach(assertProtocolKept);

async function startServer(vars = {}) {
  const server = new ChatServer({ vars });
  servers.push(server);
  return server.start();
}

describe('event streams', () => {
  let server;
  before(async () => {
    server = await startServer({ MAX_ROOM_STREAMS: '3', SSE_KEEPALIVE_MS: '500' });
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
    assert.equal(echo.id, String(posted.body.id), 'id: is the message id');

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
    const writer = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Eve`);
    await writer.welcome();
    const seen = [];
    for (const text of ['one', 'two']) seen.push(await writer.sayAndWait(text));
    await reader.nextFrame({ type: 'message', text: 'two' });
    const lastEventId = reader.lastEventId;
    assert.equal(lastEventId, String(seen[1].id));

    await server.restart('SIGKILL');
    await reader.done;
    assert.ok(reader.ended, 'the stream ended with the runtime');
    const writerAgain = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Eve`);
    await writerAgain.welcome();
    const missed = [];
    for (const text of ['three', 'four']) missed.push(await writerAgain.sayAndWait(text));

    // As EventSource reconnects: the same URL, with the last id it saw.
    const resumed = await SseClient.connect(`${server.url}/chat/${room}/events?nick=Dee`, { lastEventId });
    const welcome = await resumed.nextFrame({ type: 'welcome' });
    assert.deepEqual(welcome.history, missed, 'exactly the messages after the last event id');
    const welcomeEvent = resumed.events.find((e) => e.event === 'welcome');
    assert.equal(welcomeEvent.id, String(missed[1].id), "the welcome's id is the last message it holds");
    const bad = await SseClient.refusal(`${server.url}/chat/${room}/events`, { 'last-event-id': 'abc' });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'bad_since']);
    await Promise.all([resumed.close(), writerAgain.close()]);
  });
});
