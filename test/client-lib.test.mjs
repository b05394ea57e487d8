// The client library (src/client/lib, published as edge-chat-client) against the built Worker in
// workerd: resuming after a restart, paging what a welcome cannot hold, send() answered by the
// stored message or the server's error code, terminal close codes, and the README's example.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { mintTicket } from '../scripts/ticket.mjs';
import { ChatError, connect } from '../src/client/lib/index.js';
import { ChatClient } from './support/client.mjs';
import { storedMessages } from './support/protocol.mjs';
import { ChatServer, freePort, ROOT, tempDir, waitFor } from './support/server.mjs';

// Every limit a room has, lifted, so that one test client can post hundreds of messages; names
// not known to this server version are ignored by it.
const LIFTED = Object.fromEntries(
  ['RATE_BURST', 'RATE_PER_SECOND', 'CLIENT_BURST', 'CLIENT_PER_SECOND', 'ROOM_MESSAGES_PER_SECOND',
    'CLIENT_JOINS_PER_10S', 'MAX_SOCKETS_PER_IP'].map((name) => [name, '100000']),
);
const WAIT = { timeoutMs: 30_000 };
const TICKET_SECRET = 'client-lib-test-ticket-secret-32-bytes';

function ticket(sub, name, role = 'member') {
  return mintTicket({ sub, name, room: '*', role, exp: Math.floor(Date.now() / 1000) + 3600 }, TICKET_SECRET);
}

let lifted;
let strict;
let deadPort;
before(async () => {
  lifted = new ChatServer({ vars: { ...LIFTED, TICKET_SECRET } });
  strict = new ChatServer({ vars: { RATE_BURST: '3', RATE_PER_SECOND: '1', CLIENT_JOINS_PER_10S: '100000' } });
  [deadPort] = await Promise.all([freePort(), lifted.start(), strict.start()]);
});
// A test that fails midway leaves its rooms open, retrying: close them all so the process can end.
const rooms = [];
after(() => {
  for (const chat of rooms) chat.close();
  return Promise.all([lifted?.stop(), strict?.stop()]);
});

/**
 * A WebSocket class for the library whose network a test can cut: while `down`, every attempt goes
 * to a port nobody listens on and fails as an unreachable server does. Records every URL asked for.
 * A socket whose `lost` is set loses whatever the server sends it from then on, as a network that
 * dies after carrying a frame out but before carrying the answer back. Each socket keeps what was
 * sent on it in `sent`.
 */
function network() {
  const net = { down: false, urls: [], sockets: [] };
  net.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      super(net.down ? `ws://127.0.0.1:${deadPort}/` : url, protocols);
      this.lost = false;
      this.sent = [];
      net.urls.push(new URL(url));
      net.sockets.push(this);
    }

    send(data) {
      this.sent.push(data);
      return super.send(data);
    }

    addEventListener(type, listener, options) {
      const deliver = type === 'message' ? (event) => this.lost || listener(event) : listener;
      return super.addEventListener(type, deliver, options);
    }
  };
  /** Cuts the network: open sockets die without a close frame, new ones fail. */
  net.cut = () => {
    net.down = true;
    for (const socket of net.sockets) socket.terminate();
  };
  net.sinces = () => net.urls.map((url) => url.searchParams.get('since'));
  net.afters = () => net.urls.map((url) => url.searchParams.get('after'));
  return net;
}

function open(server, room, { nick, net = network(), ...options } = {}) {
  const chat = connect({ url: server.url, room, nick, WebSocket: net.WebSocket, ...options });
  rooms.push(chat);
  chat.seen = [];
  chat.sources = [];
  chat.addEventListener('message', (event) => {
    chat.seen.push(event.detail);
    chat.sources.push(event.source);
  });
  return Object.assign(chat, { net });
}

const opened = (chat) => waitFor(() => chat.status === 'open', { what: `${chat.room} open`, ...WAIT });

/** Posts `count` messages from one raw client and resolves with their echoes, in id order. */
async function post(server, room, label, count) {
  const writer = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=${label}`);
  await writer.welcome();
  for (let i = 1; i <= count; i++) writer.say(`${label} ${i}`);
  await writer.until((frames) => frames.filter((f) => f.type === 'message' && f.nick === label).length === count, {
    what: `${count} echoes`,
    timeoutMs: 30_000,
  });
  await writer.close();
  return writer.frames.filter((f) => f.type === 'message' && f.nick === label);
}

/** The library took every stored message exactly once, in id order, and holds them. */
function assertExactlyStored(chat, all) {
  const ids = chat.seen.map((m) => m.id);
  assert.deepEqual(ids, all.map((m) => m.id), 'every stored message once, in order, none missing');
  assert.deepEqual(chat.messages.map((m) => m.id), ids.slice(-1000));
}

describe('edge-chat-client against the Worker', () => {
  test('after a runtime restart it resumes with after=SEQ and pages the history: no gap, no duplicate', async () => {
    const room = 'restart';
    const chat = open(lifted, room, { nick: 'Lib' });
    await opened(chat);
    const [first] = await post(lifted, room, 'Early', 1);
    await waitFor(() => chat.lastId === first.id, WAIT);

    // Keep the library away until it has missed more than a welcome holds.
    chat.net.down = true;
    await lifted.restart();
    assert.equal(chat.status, 'reconnecting');
    const missed = await post(lifted, room, 'Missed', 150);
    chat.net.down = false;
    await waitFor(() => chat.status === 'open' && chat.lastId === missed.at(-1).id, WAIT);
    const [late] = await post(lifted, room, 'Late', 1);
    await waitFor(() => chat.lastId === late.id, WAIT);

    assertExactlyStored(chat, await storedMessages(lifted, room));
    assert.ok(chat.net.afters().includes(String(first.seq)), `resumed with after=${first.seq}: ${chat.net.afters()}`);
    assert.deepEqual(chat.net.sinces().filter(Boolean), [], 'never since with a server that numbers changes');
    assert.ok(chat.sources.includes('history'), 'what the welcome could not hold came from the history route');
    assert.equal(chat.nick, 'Lib', 'the nick survives the restart');
    assert.deepEqual([...chat.users], ['Lib']);
    chat.close();
  });

  test('a clear made while it was away empties its messages on the resumed welcome', async () => {
    const room = 'cleared-away';
    const chat = open(lifted, room, { nick: 'Away' });
    await opened(chat);
    const before = await post(lifted, room, 'Early', 2);
    await waitFor(() => chat.lastId === before.at(-1).id, WAIT);
    chat.net.cut();
    await waitFor(() => chat.status !== 'open', WAIT);

    const mod = open(lifted, room, { ticket: ticket('mod-clear', 'Mod', 'moderator') });
    await opened(mod);
    await mod.clear();
    const [late] = await post(lifted, room, 'Late', 1);
    chat.net.down = false;
    await waitFor(() => chat.status === 'open' && chat.lastId === late.id, WAIT);
    assert.deepEqual(chat.messages.map((m) => m.text), ['Late 1'], 'what the clear removed is gone');
    mod.close();
    chat.close();
  });

  test('a catch-up reads a bounded number of pages, then resumes on a new socket; a fresh ticket for each', async () => {
    const room = 'bounded';
    // A fresh ticket for each attempt, told apart by a claim the server ignores.
    const minted = [];
    const getTicket = async () => {
      const exp = Math.floor(Date.now() / 1000) + 3600;
      minted.push(mintTicket({ sub: 'pager-1', name: 'Pager', room: '*', exp, attempt: minted.length + 1 }, TICKET_SECRET));
      return minted.at(-1);
    };
    const chat = open(lifted, room, { nick: 'Pager', catchUpPages: 1, getTicket });
    await opened(chat);
    const [first] = await post(lifted, room, 'Before', 1);
    await waitFor(() => chat.lastId === first.id, WAIT);
    chat.net.cut();
    await waitFor(() => chat.status === 'reconnecting', WAIT);
    const missed = await post(lifted, room, 'Away', 250);
    chat.net.down = false;
    await waitFor(() => chat.status === 'open' && chat.lastId === missed.at(-1).id, WAIT);

    assertExactlyStored(chat, await storedMessages(lifted, room));
    // 250 missed: a welcome of 100 and one page of 100, then a new socket from the 200th on.
    const resumes = chat.net.afters().filter((after) => after !== null && after !== String(first.seq));
    assert.deepEqual(resumes.slice(-1), [String(missed[199].seq)], `resumed after one page: ${chat.net.afters()}`);
    // getTicket ran before every attempt, and its ticket went out as ?ticket=.
    const sent = chat.net.urls.map((url) => url.searchParams.get('ticket'));
    assert.deepEqual(sent, minted);
    assert.ok(sent.length >= 3);
    chat.close();
  });

  test('send() resolves with the stored message, in order, and rename() with the new nick', async () => {
    const room = 'send';
    const observer = await ChatClient.connect(`${lifted.wsUrl}/chat/${room}?nick=Observer`);
    await observer.welcome();
    const chat = open(lifted, room, { nick: 'Sender' });
    // Sent before the room is open: they wait and go out once it is.
    const sends = ['one', 'two', 'three'].map((text) => chat.send(text));
    const results = await Promise.all(sends);
    assert.deepEqual(results.map((m) => m.text), ['one', 'two', 'three']);
    assert.deepEqual(results.map((m) => m.nick), ['Sender', 'Sender', 'Sender']);
    assert.ok(results[0].id < results[1].id && results[1].id < results[2].id);
    const seen = await observer.next({ type: 'message', text: 'three' });
    assert.equal(seen.id, results[2].id, 'the id others see');
    // The answers carry the cid each was sent with; nobody else's copy does.
    assert.ok(results.every((m) => /^[0-9a-f]{32}$/.test(m.cid)) && new Set(results.map((m) => m.cid)).size === 3);
    assert.deepEqual(await storedMessages(lifted, room), results.map(({ cid, ...stored }) => stored));

    assert.equal(await chat.rename('Renamed'), 'Renamed');
    assert.equal(chat.nick, 'Renamed');
    await assert.rejects(chat.rename('Observer'), (error) => error instanceof ChatError && error.code === 'nick_taken');
    const after = await chat.send('after the rename');
    assert.equal(after.nick, 'Renamed');
    await waitFor(() => chat.users.includes('Renamed') && !chat.users.includes('Sender'), WAIT);
    chat.close();
    await observer.close();
  });

  test('send() rejects with rate_limited when over the limit, and the others still resolve', async () => {
    const chat = open(strict, 'limited', { nick: 'Eager' });
    await opened(chat);
    // RATE_BURST is 3: of five at once, three are stored and two refused, in order.
    const results = await Promise.allSettled(['a', 'b', 'c', 'd', 'e'].map((text) => chat.send(text)));
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'rejected']);
    for (const { reason } of results.slice(3)) {
      assert.ok(reason instanceof ChatError);
      assert.equal(reason.code, 'rate_limited');
    }
    assert.deepEqual((await storedMessages(strict, 'limited')).map((m) => m.text), ['a', 'b', 'c']);
    assert.equal(chat.status, 'open');
    chat.close();
  });

  test('a terminal close code (1008 for flooding) stops the retries', async () => {
    const chat = open(strict, 'flood', { nick: 'Flooder' });
    await opened(chat);
    const refusals = [];
    // RATE_BURST is 3: a socket is closed once 5 bursts' worth (15) were dropped in one spell.
    const sends = Array.from({ length: 20 }, (_, i) => chat.send(`spam ${i}`).catch((error) => refusals.push(error.code)));
    await waitFor(() => chat.status === 'closed', WAIT);
    await Promise.all(sends);
    assert.equal(chat.closeReason.code, 1008);
    assert.equal(chat.closeReason.error, 'rate_limited');
    assert.match(chat.closeReason.reason, /flood/i);
    assert.equal(refusals.filter((code) => code === 'rate_limited').length, 15);
    assert.equal(chat.retryAt, null);
    // A retry would start within the first backoff (at most 0.5 s): watch for four times that.
    await delay(2_000);
    assert.equal(chat.net.urls.length, 1, 'no connection attempt after the terminal close');
    assert.equal(chat.status, 'closed');
    await assert.rejects(chat.send('too late'), (error) => error.code === 'closed');
  });

  test('a resumed welcome with fewer than 100 messages is followed by the history route (a byte budget may cut it)', async () => {
    const room = 'budget';
    // Records the history pages the library reads (and lets them through).
    const pages = [];
    const realFetch = globalThis.fetch;
    globalThis.fetch = (url, ...rest) => {
      if (String(url).includes(`/chat/${room}/history`)) pages.push(new URL(url).searchParams.get('after'));
      return realFetch(url, ...rest);
    };
    const chat = open(lifted, room, { nick: 'Reader' });
    const welcomes = [];
    chat.addEventListener('welcome', ({ detail }) => welcomes.push(detail.history.length));
    const writer = open(lifted, room, { nick: 'Writer' });
    await Promise.all([opened(chat), opened(writer)]);
    const first = await writer.send('first');
    await waitFor(() => chat.lastId === first.id, WAIT);
    chat.net.cut();
    await waitFor(() => chat.status === 'reconnecting', WAIT);
    // 50 messages of 8 KB of UTF-8 each: more than the welcome's 256 KiB, fewer than its 100 messages.
    const big = '😀'.repeat(1_990);
    const missed = await Promise.all(Array.from({ length: 50 }, (_, i) => writer.send(`${i} ${big}`)));
    chat.net.down = false;
    await waitFor(() => chat.status === 'open' && chat.lastId === missed.at(-1).id, WAIT);

    globalThis.fetch = realFetch;

    // However many the welcome held (all 50, or fewer once the server's byte budget cuts it), the library
    // asked the history route for the changes after its last one, and took every message once.
    const resumed = welcomes.at(-1);
    assert.ok(resumed > 0 && resumed < 100, `a resumed welcome short of 100: ${resumed}`);
    assert.equal(pages[0], String(missed[resumed - 1].seq), `paged on from the welcome's last change: ${pages}`);
    assertExactlyStored(chat, await storedMessages(lifted, room));
    chat.close();
    writer.close();
  });

  test('moderator methods resolve with their moderated frame or reject with the code; tombstones; a kick is final', async () => {
    const room = 'moderated';
    const mod = open(lifted, room, { ticket: ticket('mod-1', 'Mod', 'moderator') });
    const ann = open(lifted, room, { ticket: ticket('ann-1', 'Ann') });
    await Promise.all([opened(mod), opened(ann)]);
    assert.deepEqual(mod.you, { nick: 'Mod', id: 'mod-1', role: 'moderator' });
    assert.deepEqual(ann.you, { nick: 'Ann', id: 'ann-1', role: 'member' });

    const gone = await ann.send('regret this');
    const kept = await ann.send('keep this');
    await waitFor(() => mod.lastId === kept.id, WAIT);
    // Only its author or a moderator deletes a message.
    const bob = open(lifted, room, { ticket: ticket('bob-1', 'Bob') });
    await opened(bob);
    await assert.rejects(bob.delete(gone.id), (error) => error instanceof ChatError && error.code === 'forbidden');
    bob.close();
    const deletions = [];
    const deletionSeqs = [];
    ann.addEventListener('deleted', (event) => {
      deletions.push([event.detail.id, event.message]);
      deletionSeqs.push(event.detail.seq);
    });
    const notices = [];
    ann.addEventListener('moderated', ({ detail }) => notices.push(`${detail.by} ${detail.action} ${detail.target}`));
    const deleted = await mod.delete(gone.id);
    assert.deepEqual([deleted.type, deleted.action, deleted.target, deleted.by], ['moderated', 'delete', 'Ann', 'Mod']);
    await waitFor(() => deletions.length === 1 && notices.length === 1, WAIT);
    // A deletion is a change with a seq of its own, after the last post.
    assert.ok(deletionSeqs[0] > kept.seq, `the deletion's seq ${deletionSeqs[0]} follows ${kept.seq}`);
    const tombstone = { type: 'message', id: gone.id, nick: 'Ann', deleted: true, at: gone.at, uid: 'ann-1', seq: deletionSeqs[0] };
    assert.deepEqual(deletions, [[gone.id, tombstone]]);
    assert.deepEqual(ann.messages.slice(-2), [tombstone, kept], 'the window holds the tombstone in its place');
    assert.deepEqual(notices, ['Mod delete Ann']);
    await assert.rejects(mod.delete(gone.id), (error) => error.code === 'not_found');
    await assert.rejects(mod.kick('Nobody'), (error) => error.code === 'not_found');

    // A newcomer takes the tombstone from its welcome as a message without text.
    const late = open(lifted, room, { nick: 'Late' });
    await opened(late);
    const replayed = late.messages.find((message) => message.id === gone.id);
    assert.deepEqual([replayed.deleted, replayed.nick, 'text' in replayed], [true, 'Ann', false]);

    assert.equal((await mod.mute('Late', { duration: 600 })).action, 'mute');
    await assert.rejects(late.send('muted words'), (error) => error.code === 'forbidden');
    assert.deepEqual(
      [(await mod.slow(5)).action, (await mod.slow(0)).target],
      ['slow', null],
    );

    const kicked = await mod.kick('Ann');
    assert.deepEqual([kicked.action, kicked.target], ['kick', 'Ann']);
    await waitFor(() => ann.status === 'closed', WAIT);
    assert.equal(ann.closeReason.code, 4000);
    assert.match(ann.closeReason.reason, /moderator/);
    assert.equal(ann.retryAt, null);

    const banned = await mod.ban('Late', { duration: 60 });
    assert.equal(banned.action, 'ban');
    await waitFor(() => late.status === 'closed', WAIT);
    assert.equal(late.closeReason.code, 4403);
    assert.equal((await mod.unban('Late')).action, 'unban');

    const cleared = await mod.clear();
    assert.deepEqual([cleared.action, cleared.target], ['clear', null]);
    assert.deepEqual(mod.messages, [], 'a clear empties the window');
    // A later frame, after the kicked client had the time to retry: it did not.
    await waitFor(() => !mod.users.includes('Ann') && !mod.users.includes('Late'), WAIT);
    assert.deepEqual(await storedMessages(lifted, room), []);
    assert.equal(ann.net.urls.length, 1, 'no connection attempt after the kick');
    assert.equal(late.net.urls.length, 1, 'no connection attempt after the ban');
    mod.close();
  });

  test('a message whose echo was lost is resent after the catch-up and stored once; changes made while away arrive by seq', async () => {
    const room = 'outbox';
    const ann = open(lifted, room, { nick: 'Ann' });
    const bob = open(lifted, room, { nick: 'Bob' });
    await Promise.all([opened(ann), opened(bob)]);
    assert.match(ann.clientId, /^[A-Za-z0-9_-]{1,64}$/);
    assert.ok(ann.net.urls.every((url) => url.searchParams.get('client') === ann.clientId));
    const edited = await bob.send('edit me');
    const removed = await bob.send('delete me');
    const reply = await bob.send('a reply', { replyTo: edited.id });
    assert.equal(reply.reply_to, edited.id);
    await waitFor(() => ann.lastId === reply.id, WAIT);
    assert.deepEqual([bob.isOwn(edited), ann.isOwn(edited), bob.canEdit(edited), ann.canEdit(edited)], [true, false, true, false]);
    await assert.rejects(ann.edit(edited.id, 'not mine'), (error) => error.code === 'forbidden');
    await assert.rejects(ann.react(edited.id, 'no'), (error) => error.code === 'bad_emoji');

    // Ann's next message is stored, but its echo never reaches her.
    ann.net.sockets.at(-1).lost = true;
    const lost = ann.send('echo lost');
    assert.deepEqual(ann.outbox.map((entry) => entry.text), ['echo lost']);
    await waitFor(() => bob.messages.some((message) => message.text === 'echo lost'), WAIT);
    const seqBefore = ann.lastSeq;
    ann.net.cut();
    const offline = ann.send('sent while offline');
    assert.deepEqual(ann.outbox.map((entry) => entry.text), ['echo lost', 'sent while offline']);
    // Bob changes older messages while Ann is away.
    const edit = await bob.edit(edited.id, 'edited while Ann was away');
    assert.equal(edit.type, 'edited');
    assert.deepEqual((await bob.react(edited.id, '👍')).counts, { '👍': 1 });
    assert.equal((await bob.delete(removed.id)).type, 'deleted');
    ann.net.down = false;

    const [first, second] = await Promise.all([lost, offline]);
    const seenByBob = bob.messages.find((message) => message.text === 'echo lost');
    assert.deepEqual([first.id, first.at], [seenByBob.id, seenByBob.at], 'the resend is answered with the original');
    assert.ok(second.id > first.id);
    assert.deepEqual(ann.outbox, []);
    const arrays = ann.net.sockets.flatMap((socket) => socket.sent).filter((data) => data.startsWith('['));
    assert.deepEqual(arrays.map((data) => JSON.parse(data).map((frame) => frame.text)), [['echo lost', 'sent while offline']],
      'what waited for the connection went out as one array frame (the batch subprotocol)');
    const texts = (await storedMessages(lifted, room)).map((message) => message.text ?? '(deleted)');
    assert.deepEqual(texts, ['edited while Ann was away', '(deleted)', 'a reply', 'echo lost', 'sent while offline']);
    await opened(ann);
    const resumed = ann.net.urls.at(-1);
    assert.equal(resumed.searchParams.get('after'), String(seqBefore), `resumed after the last seq seen: ${ann.net.urls.map((url) => url.search)}`);
    assert.equal(resumed.searchParams.has('since'), false);
    const byId = new Map(ann.messages.map((message) => [message.id, message]));
    assert.equal(byId.get(edited.id).text, 'edited while Ann was away');
    assert.equal(typeof byId.get(edited.id).edited_at, 'number');
    assert.deepEqual(byId.get(edited.id).reactions, { '👍': 1 });
    assert.equal(byId.get(removed.id).deleted, true);
    assert.deepEqual(ann.messages.map((message) => message.id), [...byId.keys()].sort((a, b) => a - b));
    assert.equal(ann.seen.filter((message) => message.text === 'echo lost').length, 1, 'taken once');
    assert.ok(ann.isOwn(first) && ann.canEdit(first));

    // Typing: at most one frame every 3 s; the other side shows it until the typist's message.
    assert.equal(bob.typing(), true);
    assert.equal(bob.typing(), false, 'at most every 3 s');
    await waitFor(() => ann.typingUsers.some((typist) => typist.nick === 'Bob'), WAIT);
    assert.deepEqual(bob.typingUsers, [], 'nobody else typed');
    await bob.send('typed');
    await waitFor(() => ann.typingUsers.length === 0, WAIT);
  });

  test('an expired ticket is replaced: on 4401 getTicket is asked again and the room reconnects once', async () => {
    // The first ticket is valid for about two more seconds, counting the minute of allowed clock skew.
    const expiring = Math.floor(Date.now() / 1000) - 58;
    let asked = 0;
    const getTicket = async () => {
      asked += 1;
      const exp = asked === 1 ? expiring : Math.floor(Date.now() / 1000) + 3600;
      return mintTicket({ sub: 'renewed-1', name: 'Renewed', room: '*', exp }, TICKET_SECRET);
    };
    const chat = open(lifted, 'renewal', { getTicket });
    await opened(chat);
    await waitFor(() => Date.now() > (expiring + 61) * 1000, { timeoutMs: 5_000, what: 'the first ticket to expire' });
    await assert.rejects(chat.send('after expiry'), (error) => ['ticket_expired', 'connection_lost'].includes(error.code));
    await waitFor(() => asked === 2 && chat.status === 'open', { what: 'a reconnect with a fresh ticket', ...WAIT });
    const stored = await chat.send('with a fresh ticket');
    assert.equal(stored.uid, 'renewed-1');
    assert.deepEqual((await storedMessages(lifted, 'renewal')).map((m) => m.text), ['with a fresh ticket']);
  });

  test('the README example works as written', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Use it from your app'));
    const code = section.match(/```js\n([\s\S]*?)```/)[1];
    assert.ok(code.trim().split('\n').length <= 12, 'twelve lines at most');
    assert.ok(code.includes("'http://localhost:8787'"));
    // An app with the package installed: node_modules/edge-chat-client is the library's folder.
    const app = tempDir('app');
    mkdirSync(join(app, 'node_modules'));
    symlinkSync(join(ROOT, 'src/client/lib'), join(app, 'node_modules/edge-chat-client'), 'dir');
    writeFileSync(join(app, 'example.mjs'), code.replace("'http://localhost:8787'", `'${lifted.url}'`));
    // Node 20 has its WebSocket behind a flag; 22 and later have it on.
    const flags = typeof globalThis.WebSocket === 'function' ? [] : ['--experimental-websocket'];
    const child = spawn(process.execPath, [...flags, 'example.mjs'], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    const exitCode = await new Promise((done) => child.on('exit', done));
    assert.equal(exitCode, 0, `the example exits cleanly; stderr: ${err}`);
    const id = Number(out.match(/stored as #(\d+)/)?.[1]);
    assert.ok(Number.isSafeInteger(id), out);
    assert.match(out, /status: open/);
    assert.match(out, /online: Ann/);
    assert.ok(out.includes(`#${id} Ann: Hello from my app`), out);
    const history = await (await fetch(`${lifted.url}/chat/lobby/history?since=${id - 1}&limit=1`)).json();
    assert.deepEqual(history.messages.map((m) => [m.id, m.nick, m.text]), [[id, 'Ann', 'Hello from my app']]);
  });
});

describe('edge-chat-client on a network that holds WebSocket upgrades', () => {
  test('a socket the app closed before it opened neither probes /health nor counts towards the HTTP fallback', async () => {
    // Every upgrade is held unanswered, so each socket stays connecting until someone closes it.
    const healthReads = [];
    const held = [];
    const http = createServer((request, response) => {
      healthReads.push(request.url);
      response.end('{"ok":true}');
    });
    http.on('upgrade', (_request, socket) => held.push(socket));
    const port = await freePort();
    await new Promise((done) => http.listen(port, '127.0.0.1', done));
    const NeverUsed = class {};
    try {
      const closedByApp = connect({ url: `http://127.0.0.1:${port}/one`, room: 'r', nick: 'One', WebSocket, EventSource: NeverUsed });
      await waitFor(() => held.length === 1, { what: 'the first upgrade', ...WAIT });
      closedByApp.close();
      // A second client whose upgrade fails by itself reads /health: once it has, the first would have too.
      const failed = connect({ url: `http://127.0.0.1:${port}/two`, room: 'r', nick: 'Two', WebSocket, EventSource: NeverUsed });
      await waitFor(() => held.length === 2, { what: 'the second upgrade', ...WAIT });
      held[1].destroy();
      await waitFor(() => healthReads.includes('/two/health'), { what: 'the failed socket\'s probe', ...WAIT });
      assert.deepEqual(healthReads, ['/two/health']);
      failed.close();
    } finally {
      held.forEach((socket) => socket.destroy());
      http.close();
    }
  });
});
