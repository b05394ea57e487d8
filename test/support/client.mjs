// A chat client over a real WebSocket that records every frame it receives, so a test can
// wait for the frame it expects (with a timeout) instead of sleeping. Every frame received and
// sent through `send` is checked against asyncapi.yaml (test/support/protocol.mjs); a test sends
// deliberately bad input with `client.socket.send`.

import { waitFor } from './wait.mjs';
import WebSocket from 'ws';
import { clientFrameProblem, httpProblem, recordViolation, serverFrameProblem } from './protocol.mjs';

export class ChatClient {
  /** Connects to `url` and resolves once the socket is open. */
  static async connect(url, options = {}) {
    const client = new ChatClient(url, options);
    await client.opened;
    return client;
  }

  /** Resolves with the HTTP status of a refused upgrade. */
  static refusal(url, options = {}) {
    return new Promise((done, fail) => {
      const socket = new WebSocket(url, options);
      socket.on('unexpected-response', (_request, response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => {
          const refusal = { status: response.statusCode, body: body ? JSON.parse(body) : null };
          const { pathname, search } = new URL(url);
          const contentType = response.headers['content-type'];
          const { status, body: json } = refusal;
          const problem = httpProblem({ path: pathname + search, status, contentType, body: json });
          if (problem) fail(new Error(problem));
          else done(refusal);
        });
      });
      socket.on('open', () => {
        socket.close();
        fail(new Error(`expected ${url} to be refused, but it opened`));
      });
      socket.on('error', () => {});
    });
  }

  /**
   * `options.protocols` lists WebSocket subprotocols to offer (e.g. ['edge-chat.batch']); the
   * frames of a JSON array frame are recorded one by one in `frames`, in order, and the array's
   * length in `arrays`.
   */
  constructor(url, { protocols, ...options } = {}) {
    this.frames = [];
    this.raw = [];
    this.violations = [];
    this.arrays = [];
    this.waiters = new Set();
    this.closeInfo = null;
    this.socket = protocols ? new WebSocket(url, protocols, options) : new WebSocket(url, options);
    this.opened = new Promise((done, fail) => {
      this.socket.once('open', done);
      this.socket.once('error', fail);
      this.socket.once('unexpected-response', (_request, response) =>
        fail(new Error(`upgrade refused with ${response.statusCode}`)),
      );
    });
    this.closed = new Promise((done) => {
      this.socket.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        this.notify();
        done(this.closeInfo);
      });
    });
    this.socket.on('error', () => {});
    this.socket.on('message', (data, isBinary) => {
      const text = data.toString();
      const problem = serverFrameProblem(text, isBinary);
      if (problem) {
        this.violations.push(problem);
        recordViolation(problem);
      }
      this.raw.push(text);
      if (!isBinary && text.startsWith('{')) this.frames.push(JSON.parse(text));
      if (!isBinary && text.startsWith('[')) {
        const batch = JSON.parse(text);
        this.arrays.push(batch.length);
        this.frames.push(...batch);
      }
      this.notify();
    });
  }

  notify() {
    for (const waiter of this.waiters) waiter();
  }

  /**
   * Waits for a frame matching `match` (an object of expected fields, or a predicate) that
   * arrived after the `from`-th frame, and returns it.
   */
  next(match, { timeoutMs = 10_000, from = 0 } = {}) {
    const predicate = typeof match === 'function' ? match : (frame) => matches(frame, match);
    return this.waitUntil(() => this.frames.slice(from).find(predicate), `a frame like ${describe(match)}`, timeoutMs);
  }

  /** Waits until `predicate(frames)` holds for all frames received so far. */
  until(predicate, { timeoutMs = 10_000, what = 'frames' } = {}) {
    return this.waitUntil(() => predicate(this.frames), what, timeoutMs);
  }

  /** Waits for a raw (non-JSON) text frame. */
  nextRaw(text, { timeoutMs = 10_000 } = {}) {
    return this.waitUntil(() => this.raw.includes(text) && text, `the raw frame ${text}`, timeoutMs);
  }

  /** Resolves with `find()`'s first truthy result, checked again on every frame. */
  waitUntil(find, what, timeoutMs) {
    return waitFor(this, {
      find,
      what,
      timeoutMs,
      ended: () => this.closeInfo && `socket closed (${this.closeInfo.code})`,
      recent: () => `last frames: ${this.recentFrames()}`,
    });
  }

  recentFrames() {
    return JSON.stringify(this.frames.slice(-5)).slice(0, 2000);
  }

  async welcome() {
    return this.next({ type: 'welcome' });
  }

  send(frame) {
    const problem = clientFrameProblem(frame);
    if (problem) throw new Error(`${problem} (send deliberate bad input with client.socket.send)`);
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  say(text) {
    this.send({ type: 'message', text });
  }

  /** Sends a message and resolves with its echo, which carries the stored id. */
  async sayAndWait(text) {
    const from = this.frames.length;
    this.say(text);
    return this.next({ type: 'message', text }, { from });
  }

  count(match) {
    return this.frames.filter((frame) => matches(frame, match)).length;
  }

  close(code = 1000, reason = '') {
    this.socket.close(code, reason);
    return this.closed;
  }

  /** Drops the TCP connection without a close frame, like a crashed client. */
  kill() {
    this.socket.terminate();
    return this.closed;
  }
}

export function matches(frame, expected) {
  return Object.entries(expected).every(([key, value]) => frame[key] === value);
}

function describe(match) {
  return typeof match === 'function' ? 'the predicate' : JSON.stringify(match);
}
