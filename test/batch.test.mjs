// Batched delivery (README "Batched delivery"): negotiation of the edge-chat.batch subprotocol,
// array frames, order, rooms kept apart, and a quiet room sending single frames. Real
// WebSockets against the built Worker in workerd; nothing here depends on timing: a burst is
// sent again until frames piled up, and every wait is for the frames expected.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS } from './support/server.mjs';
import { mintTicket } from '../scripts/ticket.mjs';

const BATCH = 'edge-chat.batch';
// A burst well past the rate limit, which is not what is tested here.
const SECRET = 'batch-test-secret-of-32-bytes-or-more';
const server = new ChatServer({
  vars: { RATE_BURST: '100000', RATE_PER_SECOND: '100000', TICKET_SECRET: SECRET, ...MANY_CLIENTS_ONE_ADDRESS },
});
let roomCounter = 0;
const freshRoom = (label) => `${label}-${process.pid}-${++roomCounter}`;

before(() => server.start());
after(() => server.stop());

async function join(room, nick, protocols) {
  const client = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=${nick}`, { protocols });
  await client.welcome();
  return client;
}

const messages = (client) => client.frames.filter((frame) => frame.type === 'message');

/** Sends `count` messages in one write burst, tagged `tag`, and waits until `readers` have them all. */
async function burst(sender, readers, tag, count) {
  const before = readers.map((reader) => messages(reader).length);
  for (let i = 0; i < count; i++) sender.say(`${tag} ${i}`);
  await Promise.all(
    readers.map((reader, r) =>
      reader.until((frames) => frames.filter((f) => f.type === 'message').length >= before[r] + count, {
        what: `${count} messages tagged ${tag}`,
      }),
    ),
  );
}

/** Bursts until `client` has received at least one array frame (the room fell behind). */
async function burstUntilBatched(sender, readers, client, tag) {
  for (let round = 0; round < 20 && client.arrays.length === 0; round++) {
    await burst(sender, readers, `${tag}${round}`, 100);
  }
  assert.ok(client.arrays.length > 0, 'frames piled up and came as arrays');
}

describe('batched delivery', () => {
  test('the server answers edge-chat.batch only to clients that offer it', async () => {
    const room = freshRoom('negotiate');
    const batched = await join(room, 'Ann', [BATCH]);
    assert.equal(batched.socket.protocol, BATCH);
    const among = await join(room, 'Bob', ['other.protocol', BATCH]);
    assert.equal(among.socket.protocol, BATCH);
    const plain = await join(room, 'Cid');
    assert.equal(plain.socket.protocol, '');
    await Promise.all([batched.close(), among.close(), plain.close()]);
  });

  test('under a burst, arrays carry frames in order; unbatched sockets get the same frames one by one', async () => {
    const room = freshRoom('burst');
    const batched = await join(room, 'Ann', [BATCH]);
    const plain = await join(room, 'Bob');
    const sender = await join(room, 'Cid');
    await burstUntilBatched(sender, [batched, plain, sender], batched, 'b');

    assert.ok(batched.arrays.every((length) => length >= 2), 'a single frame is never sent as an array of one');
    for (const text of batched.raw.filter((raw) => raw.startsWith('['))) {
      for (const frame of JSON.parse(text)) assert.equal(typeof frame.type, 'string', 'array items are frames');
    }
    assert.ok(plain.raw.every((raw) => raw.startsWith('{')), 'a socket that did not opt in never gets an array');
    assert.deepEqual(plain.arrays, []);

    const ids = messages(batched).map((frame) => frame.id);
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'ids grow within and across batches');
    assert.equal(new Set(ids).size, ids.length, 'every message once');
    assert.deepEqual(ids, messages(plain).map((frame) => frame.id), 'both sockets see the same messages in the same order');
    assert.deepEqual(messages(batched), messages(plain), 'and the same frames');
    await Promise.all([batched.close(), plain.close(), sender.close()]);
  });

  test('a batch never mixes rooms', async () => {
    const [roomA, roomB] = [freshRoom('mix-a'), freshRoom('mix-b')];
    const a = await join(roomA, 'Ann', [BATCH]);
    const b = await join(roomB, 'Bob', [BATCH]);
    const senderA = await join(roomA, 'Sa');
    const senderB = await join(roomB, 'Sb');
    for (let round = 0; round < 20 && (a.arrays.length === 0 || b.arrays.length === 0); round++) {
      await Promise.all([burst(senderA, [a], `A${round}`, 100), burst(senderB, [b], `B${round}`, 100)]);
    }
    assert.ok(a.arrays.length > 0 && b.arrays.length > 0, 'both rooms sent arrays');
    for (const [client, tag] of [[a, 'A'], [b, 'B']]) {
      for (const text of client.raw.filter((raw) => raw.startsWith('['))) {
        assert.ok(JSON.parse(text).every((frame) => frame.text.startsWith(tag)), `only room ${tag}'s messages`);
      }
    }
    await Promise.all([a.close(), b.close(), senderA.close(), senderB.close()]);
  });

  test('a quiet room sends a message at once as a single frame, never as an array', async () => {
    const room = freshRoom('quiet');
    const batched = await join(room, 'Ann', [BATCH]);
    const sender = await join(room, 'Bob');
    await batched.next({ type: 'joined', nick: 'Bob' });
    const from = batched.raw.length;
    sender.say('just one');
    await batched.next({ type: 'message', text: 'just one' });
    assert.deepEqual(batched.raw.slice(from).map((raw) => JSON.parse(raw).type), ['message']);
    assert.deepEqual(batched.arrays, []);
    await Promise.all([batched.close(), sender.close()]);
  });

  test('after a storm of 50 concurrent joins, every socket\'s users view equals GET /users', async () => {
    const room = freshRoom('storm');
    const url = (n) => `${server.wsUrl}/chat/${room}?nick=s${n}`;
    // Half opt in, half do not: both must end with the same, right view.
    const clients = await Promise.all(
      Array.from({ length: 50 }, (_, n) => ChatClient.connect(url(n), { protocols: n % 2 ? [BATCH] : undefined })),
    );
    const view = (client) => {
      const frames = client.frames;
      const start = frames.findIndex((frame) => frame.type === 'welcome');
      if (start < 0) return null;
      const users = new Set(frames[start].users);
      for (const frame of frames.slice(start + 1)) {
        if (frame.type === 'joined') users.add(frame.nick);
        if (frame.type === 'left') users.delete(frame.nick);
        if (frame.type === 'renamed') users.delete(frame.from), users.add(frame.to);
      }
      return [...users].sort();
    };
    const response = await fetch(`${server.url}/chat/${room}/users`);
    const { users } = await response.json();
    assert.equal(users.length, 50);
    const expected = [...users].sort();
    await Promise.all(
      clients.map((client) =>
        client.until(() => JSON.stringify(view(client)) === JSON.stringify(expected), { what: 'the users of /users' }),
      ),
    );
    for (const client of clients) {
      assert.equal(client.count({ type: 'joined', nick: client.frames[0].nick }), 0, 'no socket is told of its own join');
    }
    await Promise.all(clients.map((client) => client.close()));
  });

  test('a socket joining while frames pile up gets each message once: in its welcome or after it', async () => {
    const room = freshRoom('join-busy');
    const sender = await join(room, 'Ann', [BATCH]);
    const watcher = await join(room, 'Bob', [BATCH]);
    for (let i = 0; i < 300; i++) sender.say(`m ${i}`);
    const late = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Late`, { protocols: [BATCH] });
    const welcome = await late.welcome();
    await watcher.until((frames) => frames.filter((f) => f.type === 'message').length >= 300, { what: '300 messages' });
    const last = messages(watcher).at(-1).id;
    await late.until((frames) => frames.some((f) => f.type === 'message' && f.id === last) || welcome.history.at(-1)?.id === last, {
      what: 'the last message',
    });
    const seen = [...welcome.history, ...messages(late)].map((frame) => frame.id);
    const expected = messages(watcher).map((frame) => frame.id).filter((id) => id >= seen[0]);
    assert.deepEqual(seen, expected, 'no message twice, none missing, in order');
    await Promise.all([sender.close(), watcher.close(), late.close()]);
  });

  // Posts that arrive while the room is behind are held and stored together at the next tick
  // (README "Batched delivery"): each is still stored before anyone sees it, once, in order.
  test('a burst stored together: every message delivered is in the history, once, in order, echoes with their cids', async () => {
    const room = freshRoom('held');
    const sender = await join(room, 'Ann', [BATCH]);
    const watcher = await join(room, 'Bob', [BATCH]);
    for (let i = 0; i < 200; i++) sender.send({ type: 'message', text: `h ${i}`, cid: `c${i}` });
    await sender.until((frames) => frames.filter((f) => f.type === 'message').length >= 200, { what: '200 echoes' });
    await watcher.until((frames) => frames.filter((f) => f.type === 'message').length >= 200, { what: '200 messages' });
    assert.ok(watcher.arrays.length > 0, 'the room fell behind: posts came while it was busy');
    const echoes = messages(sender);
    assert.deepEqual(echoes.map((m) => m.cid), echoes.map((_, i) => `c${i}`), 'each echo carries its own cid, in order');
    assert.ok(messages(watcher).every((m) => m.cid === undefined), 'nobody else sees a cid');
    const stored = [];
    for (const since of [0, 100]) {
      const response = await fetch(`${server.url}/chat/${room}/history?since=${since}&limit=100`);
      stored.push(...(await response.json()).messages);
    }
    assert.deepEqual(stored.map((m) => [m.id, m.text]), messages(watcher).map((m) => [m.id, m.text]));
    assert.deepEqual(stored.map((m) => m.text), echoes.map((_, i) => `h ${i}`));
    await Promise.all([sender.close(), watcher.close()]);
  });

  test('while other rooms are busy, each room\'s messages are stored and delivered once, in order, to that room only', async () => {
    // Rooms of one isolate share its event loop: a post to a quiet room while another room is busy
    // waits for its room's turn (README "When."). Bursts in several rooms at once take that path.
    const rooms = ['a', 'b', 'c', 'd'].map((label) => freshRoom(`busy-${label}`));
    const pairs = await Promise.all(rooms.map(async (room, r) => [await join(room, `S${r}`, [BATCH]), await join(room, `W${r}`, [BATCH])]));
    await Promise.all(
      pairs.map(async ([sender, watcher], r) => {
        for (let i = 0; i < 60; i++) sender.send({ type: 'message', text: `r${r} ${i}`, cid: `c${i}` });
        await sender.until((frames) => frames.filter((f) => f.type === 'message').length >= 60, { what: `room ${r}'s 60 echoes` });
        await watcher.until((frames) => frames.filter((f) => f.type === 'message').length >= 60, { what: `room ${r}'s 60 messages` });
      }),
    );
    for (const [r, [sender, watcher]] of pairs.entries()) {
      const texts = Array.from({ length: 60 }, (_, i) => `r${r} ${i}`);
      assert.deepEqual(messages(watcher).map((m) => m.text), texts, `room ${r}: its own messages, once, in order`);
      assert.deepEqual(messages(sender).map((m) => m.cid), texts.map((_, i) => `c${i}`), `room ${r}: each echo with its cid`);
      const response = await fetch(`${server.url}/chat/${rooms[r]}/history?since=0&limit=100`);
      const stored = (await response.json()).messages;
      assert.deepEqual(stored.map((m) => [m.id, m.text]), messages(watcher).map((m) => [m.id, m.text]), `room ${r}: stored as delivered`);
    }
    await Promise.all(pairs.flat().map((client) => client.close()));
  });

  test('a message sent again with its cid while the first is held is stored once; both echoes name it', async () => {
    const room = freshRoom('held-again');
    const sender = await join(room, 'Ann', [BATCH]);
    const watcher = await join(room, 'Bob', [BATCH]);
    for (let round = 0; round < 20; round++) {
      // The first frame goes out at once and leaves the room busy: the next two wait for its tick.
      sender.send({ type: 'message', text: `lead ${round}`, cid: `lead${round}` });
      sender.send({ type: 'message', text: `twice ${round}`, cid: `twice${round}` });
      sender.send({ type: 'message', text: `twice ${round}`, cid: `twice${round}` });
    }
    const echoesOf = (round) => messages(sender).filter((m) => m.cid === `twice${round}`);
    await sender.until(() => echoesOf(19).length >= 2, { what: 'both echoes of the last round' });
    await watcher.until((frames) => frames.some((f) => f.type === 'message' && f.text === 'twice 19'), { what: 'twice 19' });
    for (let round = 0; round < 20; round++) {
      const [first, again] = echoesOf(round);
      assert.equal(again.id, first.id, `round ${round}: the resend names the stored message`);
      assert.equal(messages(watcher).filter((m) => m.text === `twice ${round}`).length, 1, `round ${round}: posted once`);
    }
    const response = await fetch(`${server.url}/chat/${room}/history?limit=100`);
    const { messages: stored } = await response.json();
    for (let round = 0; round < 20; round++) {
      assert.equal(stored.filter((m) => m.text === `twice ${round}`).length, 1, `round ${round}: stored once`);
    }
    await Promise.all([sender.close(), watcher.close()]);
  });
  // README "Batched delivery", "Sending arrays".
  test('an opted-in socket may send an array: items in order, each as if alone, its messages sent as one batch', async () => {
    const room = freshRoom('send-array');
    const sender = await join(room, 'Ann', [BATCH]);
    const batched = await join(room, 'Bob', [BATCH]);
    const plain = await join(room, 'Cid');
    // Two of the items are bad on purpose, so the frame goes out unchecked.
    sender.socket.send(JSON.stringify([
      { type: 'message', text: 'one', cid: 'k1' },
      { type: 'message', text: ' ' },
      'not a frame',
      { type: 'message', text: 'two', cid: 'k2' },
    ]));
    await sender.until((frames) => frames.some((f) => f.cid === 'k2'), { what: 'the echo of two' });
    const answers = sender.frames.filter((f) => f.type === 'message' || f.type === 'error').slice(-4);
    assert.deepEqual(answers.map((f) => f.cid ?? f.code), ['k1', 'empty', 'bad_json', 'k2'], 'one answer per item, in order');

    const arraysBefore = batched.arrays.length;
    sender.send(JSON.stringify(['three', 'four', 'five'].map((text, i) => ({ type: 'message', text, cid: `n${i}` }))));
    await batched.until((frames) => frames.some((f) => f.text === 'five'), { what: 'five' });
    await plain.until((frames) => frames.some((f) => f.text === 'five'), { what: 'five' });
    assert.deepEqual(batched.arrays.slice(arraysBefore), [3], 'the three came to an opted-in socket as one array');
    const texts = ['one', 'two', 'three', 'four', 'five'];
    assert.deepEqual(messages(batched).map((m) => m.text), texts);
    assert.deepEqual(messages(plain).map((m) => m.text), texts, 'and one by one, in order, to a socket that did not opt in');
    assert.ok(messages(batched).every((m) => m.cid === undefined), 'nobody else sees a cid');
    const response = await fetch(`${server.url}/chat/${room}/history`);
    assert.deepEqual((await response.json()).messages.map((m) => m.text), texts, 'every item stored, in order');
    await Promise.all([sender.close(), batched.close(), plain.close()]);
  });

  test('a batch of any size is stored whole: every field of every item', async () => {
    // A burst's messages are stored with one statement, which reads them from one JSON array: every
    // column must survive that, whatever the batch's size, up to the 64 an array may hold.
    const room = freshRoom('store-sizes');
    // A ticketed sender, so that its messages carry a `uid` too.
    const ticket = mintTicket({ sub: 'u-ann', name: 'Ann', room: '*', exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
    const sender = await ChatClient.connect(`${server.wsUrl}/chat/${room}?ticket=${ticket}`, { protocols: [BATCH] });
    await sender.welcome();
    const first = { type: 'message', text: 'first', cid: 'first' };
    sender.send(first);
    await sender.until((frames) => frames.some((f) => f.cid === 'first'), { what: 'the first echo' });
    const replyTo = messages(sender)[0].id;
    const sent = [first];
    for (const size of [2, 11, 12, 64]) {
      const items = Array.from({ length: size }, (_, i) => ({
        type: 'message',
        text: `s${size} ${i} "quoted" é😀`,
        cid: `s${size}-${i}`,
        ...(i % 2 ? { reply_to: replyTo } : {}),
      }));
      sender.socket.send(JSON.stringify(items));
      await sender.until((frames) => frames.some((f) => f.cid === `s${size}-${size - 1}`), { what: `the echoes of ${size}` });
      sent.push(...items);
    }
    const echoes = messages(sender);
    assert.deepEqual(echoes.map((m) => m.cid), sent.map((m) => m.cid), 'one echo per item, in order');
    const { messages: stored } = await (await fetch(`${server.url}/chat/${room}/history?since=0&limit=100`)).json();
    const fields = (m) => [m.id, m.nick, m.text, m.at, m.seq, m.uid, m.reply_to ?? null];
    assert.deepEqual(stored.map(fields), echoes.map(fields), 'stored as sent, every field');
    assert.ok(stored.every((m) => m.uid === 'u-ann' && m.nick === 'Ann'), 'with its sender\'s identity');
    assert.deepEqual(stored.map((m) => m.reply_to ?? null), sent.map((m) => m.reply_to ?? null));
    // A cid is stored too: sending an item again names the stored message instead of posting it.
    const again = [sent[1], sent[12], sent[30]];
    sender.socket.send(JSON.stringify(again));
    await sender.until((frames) => messages({ frames }).length >= sent.length + again.length, { what: 'the answers to the resends' });
    const answers = messages(sender).slice(sent.length);
    assert.deepEqual(answers.map((m) => [m.id, m.cid]), again.map((m) => [echoes[sent.indexOf(m)].id, m.cid]));
    const latest = await (await fetch(`${server.url}/chat/${room}/history?limit=1`)).json();
    assert.equal(latest.messages[0].id, stored.at(-1).id, 'nothing was posted twice');
    await sender.close();
  });

  test('an array that is not one is refused whole; from a socket that did not opt in it is a text message', async () => {
    const room = freshRoom('bad-array');
    const sender = await join(room, 'Ann', [BATCH]);
    const plain = await join(room, 'Bob');
    for (const bad of ['[{"type":"message","text":"lost"}', '[]', JSON.stringify(Array(65).fill({ type: 'message', text: 'lost' }))]) {
      const errors = sender.count({ type: 'error' });
      sender.socket.send(bad);
      await sender.until((frames) => frames.filter((f) => f.type === 'error').length > errors, { what: 'an error' });
      assert.equal(sender.frames.at(-1).code, 'bad_json', bad.slice(0, 40));
    }
    // Plain text from a socket that did not opt in; the frame checker reads `[` as an array frame.
    plain.socket.send('[1,2]');
    await sender.until((frames) => frames.some((f) => f.type === 'message'), { what: 'the message' });
    assert.deepEqual(messages(sender).map((m) => [m.nick, m.text]), [['Bob', '[1,2]']], 'nothing of the refused arrays was posted');
    await Promise.all([sender.close(), plain.close()]);
  });
});
