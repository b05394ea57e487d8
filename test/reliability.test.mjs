// Faults and abuse: restarts in the middle of a burst, clients that die without a close
// frame, oversized input, full rooms. Each case checks that what was acknowledged survives
// and that one client's trouble stays its own.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, afterEach, describe, test } from 'node:test';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson, storedMessages } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS, ROOT, waitFor } from './support/server.mjs';

const LIFTED_RATE = { RATE_BURST: '100000', RATE_PER_SECOND: '100000', ...MANY_CLIENTS_ONE_ADDRESS };
const servers = [];
after(() => Promise.all(servers.map((s) => s.stop('SIGKILL'))));
afterEach(assertProtocolKept);

async function startServer(vars = {}) {
  const server = new ChatServer({ vars });
  servers.push(server);
  return server.start();
}

/**
 * Sends up to `total` messages, keeping at most `window` unacknowledged, until the socket
 * closes. `acked` fills with every message the server echoed back (so acknowledged);
 * `finished` resolves once the socket has closed.
 */
function sendContinuously(client, label, { total = 200, window = 5 } = {}) {
  const run = { acked: [], sent: [] };
  let inFlight = 0;
  const pump = () => {
    while (inFlight < window && run.sent.length < total && client.socket.readyState === 1) {
      const text = `${label}-${run.sent.length}`;
      run.sent.push(text);
      inFlight++;
      client.say(text);
    }
  };
  client.socket.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    if (frame.type === 'message' && frame.text.startsWith(`${label}-`)) {
      run.acked.push(frame);
      inFlight--;
      pump();
    }
  });
  run.finished = client.closed.then(() => run);
  pump();
  return run;
}

describe('restart in the middle of a burst', () => {
  for (const signal of ['SIGTERM', 'SIGKILL']) {
    test(`every acknowledged message survives a ${signal}, exactly once and in order`, async () => {
      const server = await startServer(LIFTED_RATE);
      const room = `burst-${signal}`;
      const observer = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Observer`);
      await observer.welcome();
      const senders = [];
      for (const nick of ['S1', 'S2', 'S3']) {
        const sender = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=${nick}`);
        await sender.welcome();
        senders.push(sender);
      }
      const runs = senders.map((sender, i) => sendContinuously(sender, `s${i + 1}`));
      const ackedSoFar = () => runs.reduce((n, run) => n + run.acked.length, 0);
      await waitFor(() => ackedSoFar() >= 30, { what: '30 acknowledged messages before the restart' });
      await server.restart(signal);
      const results = await Promise.all(runs.map((run) => run.finished));
      await observer.closed;

      const acked = results.flatMap((r) => r.acked);
      const sentCount = results.reduce((n, r) => n + r.sent.length, 0);
      assert.ok(acked.length >= 30, `${acked.length} acknowledged`);
      assert.ok(sentCount > acked.length || sentCount === 600, 'the restart came mid-burst');

      const stored = await storedMessages(server, room);
      for (let i = 1; i < stored.length; i++) assert.ok(stored[i].id > stored[i - 1].id, 'stored in id order');
      const byId = new Map(stored.map((m) => [m.id, m]));
      for (const message of acked) {
        assert.deepEqual(byId.get(message.id), message, `acknowledged message ${message.id} is stored as sent`);
      }
      const texts = stored.map((m) => m.text);
      assert.equal(new Set(texts).size, texts.length, 'no message is stored twice');

      // The observer reconnects with the last id it saw and gets exactly what it missed.
      const lastSeen = observer.frames.filter((f) => f.type === 'message').at(-1).id;
      const back = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Observer&since=${lastSeen}`);
      const missed = (await back.welcome()).history;
      assert.deepEqual(missed, stored.filter((m) => m.id > lastSeen).slice(0, 100));
      const next = await back.sayAndWait('after the restart');
      assert.ok(next.id > stored.at(-1).id, 'ids keep growing');
      await back.close();
      await server.stop();
    });
  }
});

describe('dead clients', () => {
  test('a client process killed with SIGKILL is removed and its left broadcast', async () => {
    const server = await startServer();
    const room = 'dead-client';
    const watcher = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Watcher`);
    await watcher.welcome();
    const script = `
      import WebSocket from 'ws';
      const socket = new WebSocket(process.argv[1]);
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString());
        if (frame.type === 'welcome') console.log(frame.nick);
      });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, `${server.wsUrl}/chat/${room}?nick=Doomed`], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const [nick] = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next().then((r) => [r.value]);
    assert.equal(nick, 'Doomed');
    await watcher.next({ type: 'joined', nick: 'Doomed' });
    child.kill('SIGKILL');
    await watcher.next({ type: 'left', nick: 'Doomed' });
    assert.deepEqual((await fetchJson(server.url, `/chat/${room}/users`)).body.users, ['Watcher']);
    await watcher.close();
    await server.stop();
  });
});

describe('abuse', () => {
  test('oversized and binary frames fail alone; the room carries on', async () => {
    const server = await startServer();
    const room = 'oversized';
    const bystander = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Bystander`);
    await bystander.welcome();
    const abuser = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Abuser`);
    await abuser.welcome();

    abuser.socket.send(Buffer.alloc(64 * 1024, 7));
    assert.equal((await abuser.next({ type: 'error' })).code, 'unsupported');
    const from = abuser.frames.length;
    abuser.socket.send('z'.repeat(1024 * 1024));
    assert.equal((await abuser.next({ type: 'error' }, { from })).code, 'too_long');

    // Past the runtime's own message limit (32 MiB in local workerd, 1 MiB at the edge) the
    // runtime closes the socket with 1009, and only that socket.
    abuser.socket.send('y'.repeat(33 * 1024 * 1024));
    assert.equal((await abuser.closed).code, 1009);
    await bystander.next({ type: 'left', nick: 'Abuser' });
    await bystander.sayAndWait('still fine');
    const { body: history } = await fetchJson(server.url, `/chat/${room}/history`);
    assert.deepEqual(history.messages.map((m) => m.text), ['still fine']);
    await bystander.close();
    await server.stop();
  });

  test('query strings that are not UTF-8 are refused before any room is touched', async () => {
    const server = await startServer();
    for (const query of ['nick=%FF', 'nick=%C0%AF', 'nick=%E2%82', 'since=1e3', 'since=-5']) {
      const refused = await ChatClient.refusal(`${server.wsUrl}/chat/utf8?${query}`);
      assert.equal(refused.status, 400, query);
      assert.deepEqual(Object.keys(refused.body.error).sort(), ['code', 'message']);
    }
    const { body: users } = await fetchJson(server.url, '/chat/utf8/users');
    assert.equal(users.count, 0);
    await server.stop();
  });

  test('a full room refuses the next upgrade with 503 room_full, and frees a place on leave', async () => {
    const server = await startServer({ MAX_ROOM_SOCKETS: '3' });
    const room = 'tiny';
    const members = [];
    for (let i = 0; i < 3; i++) {
      const member = await ChatClient.connect(`${server.wsUrl}/chat/${room}`);
      await member.welcome();
      members.push(member);
    }
    const refused = await ChatClient.refusal(`${server.wsUrl}/chat/${room}`);
    assert.equal(refused.status, 503);
    assert.equal(refused.body.error.code, 'room_full');
    assert.match(refused.body.error.message, /full/);
    const elsewhere = await ChatClient.connect(`${server.wsUrl}/chat/another-room`);
    await elsewhere.welcome();

    const leaving = members.pop();
    const leavingNick = leaving.frames[0].nick;
    await leaving.close();
    await members[0].next({ type: 'left', nick: leavingNick });
    const newcomer = await ChatClient.connect(`${server.wsUrl}/chat/${room}`);
    await newcomer.welcome();
    await Promise.all([...members, newcomer, elsewhere].map((c) => c.close()));
    await server.stop();
  });

  test('a flooder is cut off while a calm client in the same room keeps talking', async (t) => {
    // Flooder and calm client share 127.0.0.1: this is about the per-socket limit.
    const server = await startServer(MANY_CLIENTS_ONE_ADDRESS);
    const room = 'flooded';
    const calm = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Calm`);
    await calm.welcome();
    const quiet = [];
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      await calm.sayAndWait(`quiet ${i}`);
      quiet.push(performance.now() - start);
    }
    const flooder = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Flooder`);
    await flooder.welcome();
    const floodStart = performance.now();
    for (let i = 0; i < 2000; i++) flooder.say(`flood ${i}`);
    const during = [];
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      await calm.sayAndWait(`during ${i}`);
      during.push(performance.now() - start);
    }
    assert.equal((await flooder.closed).code, 1008);
    // The burst, plus one token per 200 ms while the room worked through the drops that closed it.
    const refilled = Math.ceil(((performance.now() - floodStart) / 1000) * 5);
    assert.ok(flooder.count({ type: 'message', nick: 'Flooder' }) <= 20 + refilled, 'no more than the burst got through');
    const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    t.diagnostic(`calm client's echo time, median of 5: ${median(quiet).toFixed(1)} ms quiet, ${median(during).toFixed(1)} ms during the flood`);
    await calm.close();
    await server.stop();
  });
});
