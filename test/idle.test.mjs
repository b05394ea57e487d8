// No ghosts: a socket that sends neither a frame nor a `ping` for IDLE_TIMEOUT_S (3 s here) is
// closed with 1001 "idle" and its left broadcast once, also when nothing else wakes the room (the
// alarm does); sockets that ping (answered by the runtime without waking the room) or talk stay.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { ChatClient } from './support/client.mjs';
import { assertProtocolKept, fetchJson } from './support/protocol.mjs';
import { ChatServer, MANY_CLIENTS_ONE_ADDRESS, ROOT, waitFor } from './support/server.mjs';
import WebSocket from 'ws';

const IDLE_TIMEOUT_MS = 3_000;
const server = new ChatServer({ vars: { IDLE_TIMEOUT_S: String(IDLE_TIMEOUT_MS / 1000), ...MANY_CLIENTS_ONE_ADDRESS } });
// In a room nothing else wakes, a ghost is closed by the alarm, which comes once per timeout:
// between one and two timeouts after its last sign of life. Plus a margin for a loaded machine.
const GHOST_GONE_WITHIN_MS = 2 * IDLE_TIMEOUT_MS + 5_000;

before(() => server.start());
after(() => server.stop());
afterEach(assertProtocolKept);

/** Sends the text frame `ping` every `everyMs`, as the browser client does every 25 s; returns a stop function. */
function keepPinging(client, everyMs = IDLE_TIMEOUT_MS / 3) {
  const timer = setInterval(() => client.socket.readyState === 1 && client.socket.send('ping'), everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

describe('idle sockets', () => {
  test('a client process stopped with SIGSTOP leaves users with one left, within the timeout plus a margin', async (t) => {
    const room = 'ghost';
    const watcher = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Watcher`);
    await watcher.welcome();
    // The watcher only pings: the runtime answers without waking the room, so only the alarm can.
    const stopPinging = keepPinging(watcher);
    const script = `
      import WebSocket from 'ws';
      const socket = new WebSocket(process.argv[1]);
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString());
        if (frame.type === 'welcome') console.log(frame.nick);
      });`;
    const spawnedAt = Date.now();
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, `${server.wsUrl}/chat/${room}?nick=Ghost`], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    const [nick] = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next().then((r) => [r.value]);
    assert.equal(nick, 'Ghost');
    await watcher.next({ type: 'joined', nick: 'Ghost' });
    // Stopped, its TCP connection stays open and silent: nothing tells the room it is gone.
    child.kill('SIGSTOP');
    await watcher.next({ type: 'left', nick: 'Ghost' }, { timeoutMs: GHOST_GONE_WITHIN_MS });
    const goneAfter = Date.now() - spawnedAt;
    t.diagnostic(`the ghost left ${goneAfter} ms after it was started (IDLE_TIMEOUT_S=${IDLE_TIMEOUT_MS / 1000})`);
    assert.ok(goneAfter >= IDLE_TIMEOUT_MS, `not before it had been silent for the timeout (${goneAfter} ms)`);
    assert.deepEqual((await fetchJson(server.url, `/chat/${room}/users`)).body.users, ['Watcher']);
    // Its connection finally dropping announces nothing more.
    child.kill('SIGKILL');
    await exited;
    await watcher.sayAndWait('still here');
    assert.equal(watcher.count({ type: 'left', nick: 'Ghost' }), 1);
    assert.equal(watcher.count({ type: 'left' }), 1, 'the pinging watcher was never swept');
    stopPinging();
    await watcher.close();
  });

  test('a silent socket is closed with 1001 idle; members that ping or talk are never swept', async () => {
    const room = 'lively';
    const pinger = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Pinger`);
    await pinger.welcome();
    const talker = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Talker`);
    await talker.welcome();
    const quiet = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Quiet`);
    await quiet.welcome();
    const startedAt = Date.now();
    const stopPinging = keepPinging(pinger);
    let said = 0;
    const talking = setInterval(() => talker.socket.readyState === 1 && talker.say(`still talking ${said++}`), IDLE_TIMEOUT_MS / 3);
    talking.unref();

    await pinger.next({ type: 'left', nick: 'Quiet' }, { timeoutMs: GHOST_GONE_WITHIN_MS });
    await talker.next({ type: 'left', nick: 'Quiet' });
    // The server's close frame puts the client in CLOSING. (Under wrangler dev the runtime does not end
    // the TCP connection of a socket closed outside its own events until the client gives up waiting, so
    // the test drops it; the close event then reports the code and reason the server sent.)
    await waitFor(() => quiet.socket.readyState === WebSocket.CLOSING, { what: 'the server closing the silent socket' });
    const { code, reason } = await quiet.kill();
    assert.deepEqual({ code, reason }, { code: 1001, reason: 'idle' });
    // What is checked now is that nothing happens: the others stay for three timeouts in all.
    await delay(Math.max(0, startedAt + 3 * IDLE_TIMEOUT_MS - Date.now()));
    clearInterval(talking);
    stopPinging();
    assert.deepEqual((await fetchJson(server.url, `/chat/${room}/users`)).body.users, ['Pinger', 'Talker']);
    assert.equal(pinger.socket.readyState, 1);
    assert.equal(talker.socket.readyState, 1);
    assert.ok(pinger.raw.filter((frame) => frame === 'pong').length >= 3, 'the pings were answered');
    await talker.sayAndWait('done');
    assert.deepEqual(
      pinger.frames.filter((frame) => frame.type === 'left').map((frame) => frame.nick),
      ['Quiet'],
      'one left, for the silent socket only',
    );
    await Promise.all([pinger.close(), talker.close()]);
  });
});
