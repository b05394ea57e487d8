// An event-stream reader for tests: opens `GET /chat/ROOM/events`, records every event, and lets a
// test wait for the event it expects (with a timeout) instead of sleeping. Events that carry the
// native protocol's frames are checked against asyncapi.yaml like a WebSocket client's frames;
// `session` and `close` are the stream's own.

import { waitFor } from './wait.mjs';
import { createParser } from 'eventsource-parser';
import { httpProblem, recordViolation, serverFrameProblem } from './protocol.mjs';
import { matches } from './client.mjs';

export class SseClient {
  /** Opens the stream and resolves once its session event arrived; rejects with the refusal. */
  static async connect(url, options = {}) {
    const client = new SseClient(url, options);
    await client.opened;
    return client;
  }

  /** Resolves with `{status, body}` of a refused stream. */
  static async refusal(url, headers = {}) {
    const response = await fetch(url, { headers: { accept: 'text/event-stream', ...headers } });
    if (response.status === 200) {
      await response.body.cancel();
      throw new Error(`expected ${url} to be refused, but it opened`);
    }
    const refusal = { status: response.status, body: await response.json(), type: response.headers.get('content-type') };
    const { pathname, search } = new URL(url);
    const problem = httpProblem({ path: pathname + search, status: refusal.status, contentType: refusal.type, body: refusal.body });
    if (problem) throw new Error(problem);
    return refusal;
  }

  constructor(url, { lastEventId, headers = {} } = {}) {
    this.url = url;
    this.events = [];
    this.frames = [];
    this.violations = [];
    this.waiters = new Set();
    this.ended = false;
    this.abort = new AbortController();
    const parser = createParser({
      onEvent: (event) => this.receive(event),
      onComment: (comment) => {
        this.events.push({ event: 'comment', data: comment });
        this.notify();
      },
    });
    const requestHeaders = { accept: 'text/event-stream', ...headers };
    if (lastEventId !== undefined) requestHeaders['last-event-id'] = String(lastEventId);
    this.opened = (async () => {
      const response = await fetch(url, { headers: requestHeaders, signal: this.abort.signal });
      this.response = response;
      if (response.status !== 200) {
        const body = await response.text();
        throw new Error(`stream refused with ${response.status}: ${body}`);
      }
      this.done = (async () => {
        const decoder = new TextDecoder();
        try {
          for await (const chunk of response.body) parser.feed(decoder.decode(chunk, { stream: true }));
        } catch {
          // aborted by the test, or the runtime went away
        }
        this.ended = true;
        this.notify();
      })();
      this.session = await this.next({ event: 'session' });
      return this;
    })();
  }

  receive({ event = 'message', id, data }) {
    const entry = { event, id, data: JSON.parse(data) };
    if (!['session', 'close'].includes(event)) {
      const problem = serverFrameProblem(data) ?? (entry.data.type !== event ? `event ${event} carries a ${entry.data.type}` : null);
      if (problem) {
        this.violations.push(problem);
        recordViolation(problem);
      }
      this.frames.push(entry.data);
    }
    this.events.push(entry);
    this.notify();
  }

  notify() {
    for (const waiter of this.waiters) waiter();
  }

  get token() {
    return this.session.data.token;
  }

  get nick() {
    return this.session.data.nick;
  }

  /** Waits for an event matching `match` (`{event, ...}` compared on the event, or a predicate). */
  next(match, { timeoutMs = 10_000, from = 0 } = {}) {
    const predicate = typeof match === 'function' ? match : (entry) => matches(entry, match);
    return this.waitUntil(() => this.events.slice(from).find(predicate), JSON.stringify(match), timeoutMs);
  }

  /** Waits for a native frame matching `match`, as `ChatClient.next` does. */
  nextFrame(match, { timeoutMs = 10_000 } = {}) {
    return this.next((entry) => entry.data && matches(entry.data, match), { timeoutMs }).then((entry) => entry.data);
  }

  waitUntil(find, what, timeoutMs) {
    return waitFor(this, {
      find,
      what,
      timeoutMs,
      ended: () => this.ended && 'stream ended',
      recent: () => `last events: ${JSON.stringify(this.events.slice(-5))}`,
    });
  }

  /** The last `id:` the stream sent, as `EventSource` would send it back in `Last-Event-ID`. */
  get lastEventId() {
    return this.events.findLast((entry) => entry.id !== undefined)?.id;
  }

  /** Posts as this stream's user; resolves with `{status, body}`. */
  async post(path, body, { token = this.token, contentType = 'application/json', headers: extra = {} } = {}) {
    const base = new URL(this.url);
    const room = base.pathname.split('/')[2];
    const headers = { 'content-type': contentType, ...extra };
    if (token !== null) headers['x-edge-chat-session'] = token;
    const response = await fetch(`${base.origin}/chat/${room}/${path}`, {
      method: 'POST',
      headers,
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    // Typing is answered 204, without a body.
    const answer = { status: response.status, body: response.status === 204 ? undefined : await response.json(), type: response.headers.get('content-type') };
    const where = `/chat/${room}/${path}`;
    const problem = httpProblem({ method: 'POST', path: where, status: answer.status, contentType: answer.type, body: answer.body });
    if (problem) throw new Error(problem);
    if (token && JSON.stringify(answer.body ?? null).includes(token)) throw new Error(`${where} echoed the session token`);
    return answer;
  }

  say(text) {
    return this.post('messages', { text });
  }

  /** Drops the connection, as a reader that goes away does. */
  close() {
    this.abort.abort();
    return this.done;
  }
}
