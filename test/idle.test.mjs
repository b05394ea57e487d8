// No ghosts: a socket that sends neither a frame nor a `ping` for IDLE_TIMEOUT_S (3 s here) is
// closed with 1001 "idle" and its left broadcast once, also when nothing else wakes the room (the
// alarm does); sockets that ping (answered by the runtime without waking the room) or talk stay.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
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

  test('an occupied room holds one alarm, for its idle check; once empty, only its expiry', async () => {
    // What wakes a hibernated object is its alarm: an empty room's is ROOM_TTL_DAYS (30) away.
    const room = 'alarms';
    const ann = await ChatClient.connect(`${server.wsUrl}/chat/${room}?nick=Ann`);
    await ann.welcome();
    const stopPinging = keepPinging(ann);
    const joinedAt = Date.now();
    const idleCheck = await waitFor(() => alarmOf(server, room), { everyMs: 250, what: 'the idle check\'s alarm' });
    assert.ok(idleCheck > joinedAt && idleCheck <= Date.now() + IDLE_TIMEOUT_MS, `alarm at +${idleCheck - joinedAt} ms`);
    // Each idle check asks for the next, one timeout later.
    const next = await waitFor(() => alarmOf(server, room) > idleCheck && alarmOf(server, room), {
      timeoutMs: GHOST_GONE_WITHIN_MS,
      everyMs: 250,
      what: 'the next idle check',
    });
    assert.ok(next >= idleCheck + IDLE_TIMEOUT_MS, `the next check ${next - idleCheck} ms after the last`);
    stopPinging();
    await ann.close();
    const expiry = await waitFor(() => {
      const at = alarmOf(server, room);
      return at > Date.now() + 29 * 86_400_000 && at;
    }, { everyMs: 250, what: 'the expiry alarm in place of the idle check' });
    assert.ok(expiry <= Date.now() + 30 * 86_400_000);
    assert.equal(ann.count({ type: 'left' }), 0, 'the pinging member was never swept');
  });

  test('a room whose members vanished in a restart keeps its history when its idle alarm finds it empty', { timeout: 60_000 }, async () => {
    // Its own runtime, restarted: a SIGKILL takes the sockets with it, and no close event reaches the room.
    const own = new ChatServer({ vars: { IDLE_TIMEOUT_S: String(IDLE_TIMEOUT_MS / 1000), ...MANY_CLIENTS_ONE_ADDRESS } });
    await own.start();
    try {
      const room = 'restarted';
      const client = await ChatClient.connect(`${own.wsUrl}/chat/${room}?nick=Ann`);
      await client.welcome();
      const kept = await client.sayAndWait('kept across the restart');
      await own.restart('SIGKILL');
      await client.closed;
      // The idle check's alarm, set when Ann joined, finds nobody: it plans the room's expiry
      // (ROOM_TTL_DAYS from now) rather than taking it for the expiry itself.
      const expiresAt = await waitFor(() => recordedExpiry(own), {
        timeoutMs: GHOST_GONE_WITHIN_MS + 10_000,
        everyMs: 500,
        what: 'the alarm to plan the expiry',
      });
      assert.ok(expiresAt > Date.now() + 29 * 86_400_000, `expires at ${new Date(expiresAt).toISOString()}`);
      const history = await fetchJson(own.url, `/chat/${room}/history`);
      assert.deepEqual(history.body.messages, [kept]);
    } finally {
      await own.stop();
    }
  });
});

/** The `expires_at` setting of the one room that has a settings table in `server`'s persisted state, or 0. */
function recordedExpiry(server) {
  const dir = join(server.persistDir, 'v3/do/edge-chat-ChatRoom');
  const files = readdirSync(dir).filter((f) => f.endsWith('.sqlite') && f !== 'metadata.sqlite');
  const script = `
import sqlite3, sys
found = 0
for path in sys.argv[1:]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'settings'").fetchone():
        row = db.execute("SELECT value FROM settings WHERE key = 'expires_at'").fetchone()
        found = max(found, int(row[0]) if row else 0)
print(found)`;
  return Number(execFileSync('python3', ['-c', script, ...files.map((f) => join(dir, f))]).toString());
}

/** When the object of `room` in `server`'s persisted state has its alarm (ms), or null for none. */
function alarmOf(server, room) {
  const dir = join(server.persistDir, 'v3/do/edge-chat-ChatRoom');
  const script = `
import glob, json, os, sqlite3, sys
dir, room = sys.argv[1], sys.argv[2]
actor = None
for path in glob.glob(os.path.join(dir, "*.sqlite")):
    if path.endswith("metadata.sqlite"):
        continue
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if (room,) in db.execute("SELECT name FROM __miniflare_do_name").fetchall():
            actor = os.path.basename(path)[:-len(".sqlite")]
    except sqlite3.Error:
        pass
meta = sqlite3.connect(f"file:{os.path.join(dir, 'metadata.sqlite')}?mode=ro", uri=True)
row = meta.execute("SELECT scheduled_time FROM _cf_ALARM WHERE actor_id = ?", (actor,)).fetchone() if actor else None
print(json.dumps(row[0] // 1_000_000 if row else None))  # stored in nanoseconds`;
  return JSON.parse(execFileSync('python3', ['-c', script, dir, room]).toString());
}
