// A message's life over real WebSockets against the built Worker in workerd: sent exactly once
// with a cid (also across a SIGKILL of the runtime), edited, deleted, reacted to, replied to,
// typing, and a client that comes back with `after` missing no change made while it was away.

import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, afterEach, before, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson, storedMessages } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS } from './support/server.mjs';

// An edit window short enough to run out within a test, long enough for the edits before it on a busy machine.
const EDIT_WINDOW_S = 5;
const ADMIN_TOKEN = 'operator-token-for-message-tests';
const server = new ChatServer({ vars: { EDIT_WINDOW_S: String(EDIT_WINDOW_S), ADMIN_TOKEN, ...MANY_CLIENTS_ONE_ADDRESS } });
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(() => server.start());
after(() => server.stop());
afterEach(assertProtocolKept);

async function join(room, query = '', on = server) {
  const client = await ChatClient.connect(`${on.wsUrl}/chat/${room}${query}`);
  await client.welcome();
  return client;
}

/** Sends `frame` and resolves with the first frame after it matching `match`. */
function ask(client, frame, match) {
  const from = client.frames.length;
  client.send(frame);
  return client.next(match, { from });
}

const errorOf = async (client, frame) => (await ask(client, frame, { type: 'error' })).code;

describe('exactly once', () => {
  test('a cid comes back to its sender only, and a resend from the same client posts nothing', async () => {
    const room = freshRoom('cid');
    const ann = await join(room, '?nick=Ann&client=ann-tab');
    const bob = await join(room, '?nick=Bob');
    const frame = { type: 'message', text: 'only once', cid: 'c-1' };
    const echo = await ask(ann, frame, { type: 'message', text: 'only once' });
    assert.equal(echo.cid, 'c-1', 'the echo carries the cid');
    const seen = await bob.next({ type: 'message', text: 'only once' });
    assert.deepEqual(seen, withoutCid(echo), 'everyone else gets the same frame without the cid');

    // The same client on a new socket, as after a reconnect, sends it again.
    await ann.close();
    const again = await join(room, '?nick=Ann&client=ann-tab');
    assert.deepEqual(await ask(again, frame, { type: 'message', text: 'only once' }), echo, 'the original, same id, at and seq');
    // Another client may use the same cid for its own message.
    const bobsOwn = await ask(bob, frame, { type: 'message', text: 'only once', nick: 'Bob' });
    assert.ok(bobsOwn.id > echo.id);
    await again.next({ type: 'message', id: bobsOwn.id });
    assert.equal(again.count({ type: 'message', id: echo.id }), 1, 'the resend reached nobody else');
    assert.equal(bob.count({ type: 'message', id: echo.id }), 1);
    const stored = await storedMessages(server, room);
    assert.deepEqual(stored.map((m) => [m.nick, m.text]), [['Ann', 'only once'], ['Bob', 'only once']]);
    assert.ok(stored.every((m) => m.cid === undefined), 'history never shows a cid');
    await Promise.all([again.close(), bob.close()]);
  });

  test('bad cids, client ids and resume queries are refused', async () => {
    const room = freshRoom('bad-cid');
    const ann = await join(room);
    ann.socket.send(JSON.stringify({ type: 'message', text: 'x', cid: 'no spaces' }));
    assert.equal((await ann.next({ type: 'error' })).code, 'bad_json');
    for (const [query, code] of [['client=a%20b', 'bad_client'], ['after=x', 'bad_after'], ['after=1&since=1', 'bad_after']]) {
      const refusal = await ChatClient.refusal(`${server.wsUrl}/chat/${room}?${query}`);
      assert.deepEqual([refusal.status, refusal.body.error.code], [400, code], query);
    }
    await ann.close();
  });
});

describe('exactly once across a SIGKILL of the runtime', () => {
  const killed = new ChatServer();
  after(() => killed.stop('SIGKILL'));

  /** Reconnects as the same client, resends `frame` and returns the echo; the history then holds it once. */
  async function resend(room, frame) {
    const client = await join(room, '?nick=Ann&client=ann-tab', killed);
    const echo = await ask(client, frame, { type: 'message', cid: frame.cid });
    const stored = (await storedMessages(killed, room)).filter((m) => m.text === frame.text);
    assert.deepEqual(stored, [withoutCid(echo)], 'the history holds the text exactly once');
    await client.close();
    return echo;
  }

  /** Sends SIGKILL to the whole runtime and starts it again on the same state. */
  const restart = () => killed.restart('SIGKILL');

  test('killed before the store, after it, or at any moment: a resend leaves the text once', { timeout: 180_000 }, async () => {
    await killed.start();
    const room = 'killed';

    // Before the store: the runtime is stopped (SIGSTOP) when the frame is sent, so it never
    // reads it, and is then killed.
    const early = await join(room, '?nick=Ann&client=ann-tab', killed);
    process.kill(-killed.child.pid, 'SIGSTOP');
    const lost = { type: 'message', text: 'sent into a frozen runtime', cid: 'lost-1' };
    early.send(lost);
    await restart();
    assert.deepEqual((await storedMessages(killed, room)).map((m) => m.text), [], 'it was never stored');
    const posted = await resend(room, lost);
    assert.equal(posted.cid, 'lost-1');

    // After the store, before the sender saw its echo: the sender stops reading its socket, an
    // observer sees the message stored, then the runtime is killed.
    const observer = await join(room, '?nick=Observer', killed);
    const blind = await join(room, '?nick=Ann&client=ann-tab', killed);
    blind.socket.pause();
    const stored = { type: 'message', text: 'stored, echo never seen', cid: 'seen-1' };
    blind.send(stored);
    const broadcast = await observer.next({ type: 'message', text: stored.text });
    await restart();
    assert.equal(blind.count({ type: 'message', text: stored.text }), 0, 'the sender never saw its echo');
    const original = await resend(room, stored);
    assert.deepEqual(withoutCid(original), broadcast, 'the resend gets the original: same id, at and seq');

    // At any moment: sent and killed at once, with no waiting either way.
    const racer = await join(room, '?nick=Ann&client=ann-tab', killed);
    const raced = { type: 'message', text: 'sent as the runtime died', cid: 'race-1' };
    racer.send(raced);
    await restart();
    await resend(room, raced);
    const texts = (await storedMessages(killed, room)).map((m) => m.text);
    assert.deepEqual(texts, [lost.text, stored.text, raced.text]);
  });
});

function withoutCid({ cid: _, ...message }) {
  return message;
}

describe('changes', () => {
  test('edit: the author within EDIT_WINDOW_S; others forbidden, deleted not_found, later too_late', async () => {
    const room = freshRoom('edit');
    const ann = await join(room, '?nick=Ann&client=ann-tab');
    const bob = await join(room, '?nick=Bob');
    const posted = await ann.sayAndWait('helo');
    const edited = await ask(ann, { type: 'edit', id: posted.id, text: ' hello ' }, { type: 'edited' });
    assert.deepEqual(withoutTimes(edited), { type: 'edited', id: posted.id, text: 'hello', seq: posted.seq + 1 });
    assert.ok(edited.edited_at >= posted.at);
    assert.deepEqual(await bob.next({ type: 'edited' }), edited, 'every socket gets it');
    assert.equal(await errorOf(bob, { type: 'edit', id: posted.id, text: 'mine now' }), 'forbidden');
    assert.equal(await errorOf(ann, { type: 'edit', id: posted.id + 100, text: 'x' }), 'not_found');
    assert.equal(await errorOf(ann, { type: 'edit', id: posted.id, text: '   ' }), 'empty');
    const [stored] = (await fetchJson(server.url, `/chat/${room}/history`)).body.messages;
    assert.deepEqual([stored.text, stored.edited_at, stored.seq], ['hello', edited.edited_at, edited.seq]);

    // The same client reconnected is still the author; once the window has passed, too_late.
    await ann.close();
    const back = await join(room, '?nick=Ann&client=ann-tab');
    await ask(back, { type: 'edit', id: posted.id, text: 'hello again' }, { type: 'edited', text: 'hello again' });
    // Waiting for the window itself to pass, not for a frame.
    await delay(posted.at + EDIT_WINDOW_S * 1000 + 200 - Date.now());
    assert.equal(await errorOf(back, { type: 'edit', id: posted.id, text: 'too late' }), 'too_late');
    await Promise.all([back.close(), bob.close()]);
  });

  test('delete by its author: a tombstone with a seq; nobody else may', async () => {
    const room = freshRoom('delete');
    const ann = await join(room, '?nick=Ann&client=ann-tab');
    const bob = await join(room, '?nick=Bob');
    const gone = await ann.sayAndWait('oops');
    assert.equal(await errorOf(bob, { type: 'delete', id: gone.id }), 'forbidden');
    const deleted = await ask(ann, { type: 'delete', id: gone.id }, { type: 'deleted' });
    assert.deepEqual([deleted.id, deleted.seq], [gone.id, gone.seq + 1]);
    assert.deepEqual(await bob.next({ type: 'deleted' }), deleted);
    assert.equal(await errorOf(ann, { type: 'delete', id: gone.id }), 'not_found', 'deleted already');
    assert.equal(await errorOf(ann, { type: 'edit', id: gone.id, text: 'x' }), 'not_found', 'a tombstone is not edited');
    assert.equal(bob.count({ type: 'moderated' }), 0, 'an author deleting is not moderation');
    const history = (await fetchJson(server.url, `/chat/${room}/history`)).body.messages;
    assert.deepEqual(history, [{ type: 'message', id: gone.id, nick: 'Ann', deleted: true, at: gone.at, seq: deleted.seq }]);
    await Promise.all([ann.close(), bob.close()]);
  });

  test('react toggles per sender, counts, and is bounded; history carries reactions', async () => {
    const room = freshRoom('react');
    const ann = await join(room, '?nick=Ann&client=ann-tab');
    const bob = await join(room, '?nick=Bob');
    const posted = await ann.sayAndWait('react to me');
    // Each toggle's own frame: the first with a seq above the last toggle's (the other socket's
    // frames may still be on their way).
    let last = posted.seq;
    const react = async (client, emoji) => {
      const frame = await ask(client, { type: 'react', id: posted.id, emoji }, (f) => f.type === 'reactions' && f.seq > last);
      last = frame.seq;
      return frame;
    };
    assert.deepEqual((await react(ann, '👍')).counts, { '👍': 1 });
    assert.deepEqual((await react(bob, '👍')).counts, { '👍': 2 });
    const flag = await react(bob, '🇫🇷');
    assert.deepEqual(flag.counts, { '👍': 2, '🇫🇷': 1 });
    assert.deepEqual(await ann.next({ type: 'reactions', seq: flag.seq }), flag, 'every socket gets the counts');
    const off = await react(ann, '👍');
    assert.deepEqual(off.counts, { '👍': 1, '🇫🇷': 1 }, 'the same sender toggles it off');
    for (const bad of ['ok', '👍👍', '', 'x'.repeat(40)]) {
      const code = await (async () => {
        const from = ann.frames.length;
        ann.socket.send(JSON.stringify({ type: 'react', id: posted.id, emoji: bad }));
        return (await ann.next({ type: 'error' }, { from })).code;
      })();
      assert.equal(code, 'bad_emoji', JSON.stringify(bad));
    }
    assert.equal(await errorOf(ann, { type: 'react', id: posted.id + 100, emoji: '👍' }), 'not_found');
    // 20 distinct emoji at most (from two senders, each within its socket's rate limit).
    const carol = await join(room, '?nick=Carol');
    for (const [i, emoji] of [...'😀😁😂😃😄😅😆😇😈😉😊😋😌😍😎😏😐😑'].entries()) await react(i % 2 ? ann : carol, emoji);
    assert.equal(await errorOf(ann, { type: 'react', id: posted.id, emoji: '🎉' }), 'bad_emoji', 'a 21st emoji');
    const [stored] = (await fetchJson(server.url, `/chat/${room}/history`)).body.messages;
    assert.equal(Object.keys(stored.reactions).length, 20);
    assert.equal(stored.reactions['👍'], 1);
    const plain = await ann.sayAndWait('no reactions');
    assert.equal('reactions' in plain, false, 'omitted when empty');
    await Promise.all([ann.close(), bob.close(), carol.close()]);
  });

  test('reply_to names a message in the window, is stored and broadcast', async () => {
    const room = freshRoom('reply');
    const ann = await join(room, '?nick=Ann');
    const bob = await join(room, '?nick=Bob');
    const question = await ann.sayAndWait('tea?');
    const answer = await ask(bob, { type: 'message', text: 'yes', reply_to: question.id }, { type: 'message', text: 'yes' });
    assert.equal(answer.reply_to, question.id);
    assert.equal((await ann.next({ type: 'message', text: 'yes' })).reply_to, question.id);
    assert.equal(await errorOf(bob, { type: 'message', text: 'to nothing', reply_to: question.id + 50 }), 'not_found');
    const history = (await fetchJson(server.url, `/chat/${room}/history`)).body.messages;
    assert.deepEqual(history.map((m) => [m.text, m.reply_to]), [['tea?', undefined], ['yes', question.id]]);
    await Promise.all([ann.close(), bob.close()]);
  });

  test('typing reaches everyone else, once per 2 s, and costs no message budget', async () => {
    const room = freshRoom('typing');
    const ann = await join(room, '?nick=Ann');
    const bob = await join(room, '?nick=Bob');
    const sent = Date.now();
    ann.send({ type: 'typing' });
    const typing = await bob.next({ type: 'typing' });
    assert.equal(typing.nick, 'Ann');
    assert.ok(typing.until >= sent + 6000 - 1000 && typing.until <= Date.now() + 6000 + 1000, 'until is now + 6 s');
    // A full message burst, then a pile of typing frames: none is rate limited, and within 2 s
    // none is told again.
    for (let i = 0; i < 20; i++) ann.say(`burst ${i}`);
    for (let i = 0; i < 30; i++) ann.send({ type: 'typing' });
    const marker = ann.frames.length;
    ann.say('marker');
    await ann.next((f) => (f.type === 'message' && f.text === 'marker') || f.type === 'error', { from: marker });
    await bob.next({ type: 'message', text: 'burst 19' });
    assert.ok(ann.count({ type: 'error' }) <= 1, 'only the marker may be over the message rate');
    assert.equal(ann.closeInfo, null, 'not closed for flooding');
    assert.equal(ann.count({ type: 'typing' }), 0, 'the typist is not told of itself');
    assert.ok(bob.count({ type: 'typing' }) <= 2, 'at most one more within the throttle');
    const history = (await fetchJson(server.url, `/chat/${room}/history`)).body.messages;
    assert.ok(history.every((m) => m.type === 'message'), 'typing is never stored');
    await Promise.all([ann.close(), bob.close()]);
  });
});

function withoutTimes({ edited_at: _, ...frame }) {
  return frame;
}

describe('resume', () => {
  test('after=SEQ brings every edit, delete and reaction made while a client was away', async () => {
    const room = freshRoom('resume');
    const ann = await join(room, '?nick=Ann&client=ann-tab');
    const first = await ann.sayAndWait('first');
    const second = await ann.sayAndWait('second');
    const third = await ann.sayAndWait('third');
    const bob = await join(room, '?nick=Bob');
    const seen = bob.frames[0].seq;
    assert.equal(seen, third.seq, 'the welcome carries the latest seq');
    await bob.close();

    // While Bob is away: an edit and a reaction on old messages, a delete, and a new message.
    await ask(ann, { type: 'edit', id: first.id, text: 'first, edited' }, { type: 'edited' });
    await ask(ann, { type: 'react', id: second.id, emoji: '🎉' }, { type: 'reactions' });
    await ask(ann, { type: 'delete', id: third.id }, { type: 'deleted' });
    const fourth = await ann.sayAndWait('fourth');

    const back = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Bob&after=${seen}`);
    const welcome = await back.welcome();
    assert.equal(welcome.seq, fourth.seq);
    assert.deepEqual(welcome.history.map((m) => m.id), [first.id, second.id, third.id, fourth.id], 'sorted by id');
    const [edited, reacted, deleted, posted] = welcome.history;
    assert.deepEqual([edited.text, typeof edited.edited_at], ['first, edited', 'number']);
    assert.deepEqual(reacted.reactions, { '🎉': 1 });
    assert.deepEqual([deleted.deleted, deleted.text], [true, undefined]);
    assert.deepEqual(posted, withoutCid(fourth));
    assert.ok(welcome.history.every((m) => m.seq > seen));
    assert.deepEqual(
      welcome.history.map((m) => m.seq).sort((a, b) => a - b),
      [seen + 1, seen + 2, seen + 3, seen + 4],
      'each message once, in its latest state',
    );
    // Up to date: resuming from the latest seq brings nothing; since=ID keeps its meaning.
    const current = await join(room, `?after=${welcome.seq}`);
    assert.deepEqual(current.frames[0].history, []);
    const bySince = await join(room, `?since=${third.id}`);
    assert.deepEqual(bySince.frames[0].history.map((m) => m.id), [fourth.id]);
    const page = (await fetchJson(server.url, `/chat/${room}/history?after=${seen}&limit=2`)).body.messages;
    const lowest = [[first.id, seen + 1], [second.id, seen + 2]];
    assert.deepEqual(page.map((m) => [m.id, m.seq]), lowest, 'the history route pages changes: lowest seqs first');
    await Promise.all([ann.close(), back.close(), current.close(), bySince.close()]);
  });

  test('a client resuming from before a clear is told to drop what it holds', async () => {
    const room = freshRoom('cleared');
    const ann = await join(room, '?nick=Ann');
    const old = await ann.sayAndWait('before the clear');
    const bob = await join(room, '?nick=Bob');
    const seen = bob.frames[0].seq;
    assert.equal(bob.frames[0].cleared, undefined, 'a first welcome says nothing of clears');
    await bob.close();

    const cleared = await fetchJson(server.url, `/chat/${room}/admin`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      json: { action: 'clear' },
    });
    assert.equal(cleared.status, 200);
    await ann.next({ type: 'moderated', action: 'clear' });
    const fresh = await ann.sayAndWait('after the clear');

    for (const query of [`after=${seen}`, `since=${old.id}`]) {
      const back = await join(room, `?nick=Bob&${query}`);
      const welcome = back.frames[0];
      assert.equal(welcome.cleared, true, `${query}: the welcome says the history was cleared`);
      assert.deepEqual(welcome.history.map((m) => m.text), ['after the clear'], query);
      await back.close();
    }
    // A client that saw a post after the clear holds nothing the clear removed.
    const current = await join(room, `?after=${fresh.seq}`);
    assert.equal(current.frames[0].cleared, undefined);
    await Promise.all([ann.close(), current.close()]);
  });

  test('GET history pages back with before=ID', async () => {
    const room = freshRoom('before');
    const ann = await join(room, '?nick=Ann');
    const ids = [];
    for (let i = 1; i <= 5; i++) ids.push((await ann.sayAndWait(`m${i}`)).id);
    const page = async (query) => (await fetchJson(server.url, `/chat/${room}/history?${query}`)).body.messages;
    assert.deepEqual((await page(`before=${ids[3]}&limit=2`)).map((m) => m.text), ['m2', 'm3'], 'the newest below, oldest first');
    assert.deepEqual((await page(`before=${ids[1]}`)).map((m) => m.text), ['m1']);
    assert.deepEqual(await page(`before=${ids[0]}`), []);
    for (const [query, code] of [['before=x', 'bad_before'], [`before=3&since=1`, 'bad_before']]) {
      const answer = await fetchJson(server.url, `/chat/${room}/history?${query}`);
      assert.deepEqual([answer.status, answer.body.error.code], [400, code]);
    }
    await ann.close();
  });
});
