// edge-chat-client over plain HTTP, for networks that let no WebSocket through: the room's event
// stream (`GET /chat/ROOM/events`, read with the platform's `EventSource`) for what the room sends,
// and `POST /chat/ROOM/messages` / `/nick` for what the client sends. `SseSocket` looks like a
// WebSocket to the rest of the library, so reconnecting, `since`, catching up and answering `send()`
// work unchanged; `TransportFallback` decides when to use it.

const SESSION_HEADER = 'X-Edge-Chat-Session';
// Every frame type the room sends, each an event of its own name (an EventSource only delivers
// the named events it listens to).
const FRAME_EVENTS = [
  'welcome', 'message', 'joined', 'left', 'renamed', 'deleted', 'moderated', 'error', 'edited', 'reactions', 'typing',
];
// The code a socket gets when its connection fails without a close frame.
const ABNORMAL = 1006;

/**
 * A WebSocket-shaped connection over an event stream and posts. `url` is the WebSocket URL the
 * library built (`ws(s)://HOST/chat/ROOM?nick=…&since=…&ticket=…`); the stream takes the same query.
 */
export function sseSocketClass(EventSourceImpl) {
  return class SseSocket extends EventTarget {
    #source;
    #base;
    #token = null;
    #posts = Promise.resolve();
    #lastSeenId = 0;
    #idWaiters = [];
    readyState = 0;

    constructor(url) {
      super();
      const wsUrl = new URL(url);
      wsUrl.protocol = wsUrl.protocol === 'wss:' ? 'https:' : 'http:';
      this.#base = wsUrl;
      const streamUrl = new URL(`${wsUrl.pathname.replace(/\/$/, '')}/events${wsUrl.search}`, wsUrl);
      const source = new EventSourceImpl(streamUrl.href);
      this.#source = source;
      source.addEventListener('session', (event) => {
        const session = parse(event.data);
        if (!session?.token) return;
        this.#token = session.token;
        this.readyState = 1;
        this.dispatchEvent(new Event('open'));
      });
      for (const type of FRAME_EVENTS) {
        source.addEventListener(type, (event) => {
          // An `error` event without data is the EventSource's own: the connection failed.
          if (typeof event.data !== 'string') return this.#end(ABNORMAL, 'the event stream failed');
          if (type === 'message') this.#seen(parse(event.data)?.id);
          this.#deliver(event.data);
        });
      }
      source.addEventListener('close', (event) => {
        const { code = ABNORMAL, reason = '' } = parse(event.data) ?? {};
        this.#end(code, reason);
      });
    }

    /** `ping` is answered at once while the stream is open (the stream carries its own keep-alive). */
    send(data) {
      if (this.readyState !== 1) throw new Error('the event stream is not open');
      if (data === 'ping') {
        queueMicrotask(() => this.#deliver('pong'));
        return;
      }
      const frame = parse(data);
      // The room answers posts in order, as it answers a socket's frames: one at a time.
      this.#posts = this.#posts.then(() => this.#post(frame));
    }

    close() {
      this.#end(1000, '');
    }

    async #post(frame) {
      const path = { message: 'messages', edit: 'messages', delete: 'messages', react: 'messages', typing: 'messages', nick: 'nick' }[frame?.type];
      if (!path) {
        this.#deliver(errorFrame('unsupported', 'Over HTTP (SSE) a client can post, edit, delete, react, type and rename, nothing else.'));
        return;
      }
      const url = new URL(`${this.#base.pathname.replace(/\/$/, '')}/${path}`, this.#base);
      // The session token stands for the stream's admission, ticket included.
      const headers = { 'content-type': 'application/json', [SESSION_HEADER]: this.#token };
      let response;
      let body;
      try {
        response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(frame) });
        // Typing is answered 204, without a body.
        body = response.status === 204 ? null : await response.json();
      } catch {
        return this.#end(ABNORMAL, 'a post failed');
      }
      if (this.readyState !== 1) return;
      if (response.ok) {
        // The echo comes over the stream: wait for it, so that answers keep their order.
        if (frame.type === 'message' && Number.isSafeInteger(body?.id)) await this.#until(body.id);
        return;
      }
      if (response.status === 401 && body?.error?.code === 'bad_session') {
        return this.#end(ABNORMAL, 'the event stream ended');
      }
      this.#deliver(errorFrame(body?.error?.code ?? 'unavailable', body?.error?.message ?? 'The post failed.'));
    }

    #seen(id) {
      if (!Number.isSafeInteger(id) || id <= this.#lastSeenId) return;
      this.#lastSeenId = id;
      this.#idWaiters = this.#idWaiters.filter(({ id: wanted, done }) => (wanted <= id ? (done(), false) : true));
    }

    #until(id) {
      if (id <= this.#lastSeenId) return Promise.resolve();
      return new Promise((done) => this.#idWaiters.push({ id, done }));
    }

    #deliver(data) {
      if (this.readyState !== 1) return;
      const event = new Event('message');
      event.data = data;
      this.dispatchEvent(event);
    }

    #end(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.#source.close();
      for (const { done } of this.#idWaiters.splice(0)) done();
      const event = new Event('close');
      Object.assign(event, { code, reason, wasClean: code !== ABNORMAL });
      queueMicrotask(() => this.dispatchEvent(event));
    }
  };
}

/**
 * When to give up on WebSockets: after `after` attempts in a row that never opened while plain HTTP
 * reached the server (`/health` answered after each), the connection falls back to SSE and posts.
 * A server that is down answers no `/health` either, so a restart never counts.
 */
export class TransportFallback {
  #failures = 0;
  #base;
  #after;
  socket = null;

  constructor(base, EventSourceImpl, { after = 3 } = {}) {
    this.#base = base;
    this.#after = after;
    this.EventSource = EventSourceImpl;
  }

  /** `websocket`, or `sse` once fallen back. */
  get transport() {
    return this.socket ? 'sse' : 'websocket';
  }

  opened() {
    this.#failures = 0;
  }

  /** A connection closed; `opened` says whether it ever opened. Resolves true when it falls back now. */
  async closed(opened) {
    if (this.socket || !this.EventSource || opened) return false;
    // Offline, a failure says nothing about WebSockets (and a probe would only fail too).
    if (globalThis.navigator?.onLine === false) {
      this.#failures = 0;
      return false;
    }
    let httpWorks = false;
    try {
      httpWorks = (await fetch(new URL('health', this.#base))).ok;
    } catch {
      // no network at all
    }
    this.#failures = httpWorks ? this.#failures + 1 : 0;
    if (this.socket || this.#failures < this.#after) return false;
    this.socket = sseSocketClass(this.EventSource);
    return true;
  }
}

function parse(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

function errorFrame(code, message) {
  return JSON.stringify({ type: 'error', code, message });
}
