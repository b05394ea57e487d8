// edge-chat-client: the protocol of an edge chat room without any UI. One `ChatRoom` keeps one
// room connected: it reconnects with jittered backoff, resumes with `after` (the last change
// seen; `since` with servers that have no sequence numbers), pages the HTTP history when a welcome
// cannot hold everything that was missed, takes each message once in id order and applies its
// later edits, deletion and reactions, keeps the users list and who is typing current, keeps an
// outbox whose messages are resent after a reconnect (posted once thanks to their `cid`), answers
// `send()` with the stored message, and carries out a moderator's actions.
// No dependencies: it runs in browsers and in Node 20+ (pass `WebSocket` where there is no global one).

import { TransportFallback } from './sse.js';

export const BATCH_PROTOCOL = 'edge-chat.batch';
// The most frames in one array frame, either way.
const MAX_ARRAY_ITEMS = 64;

// The server puts at most this many messages in a history page.
const PAGE_SIZE = 100;
// A catch-up reads at most this many pages (as many messages as a room keeps) before it resumes
// with a later `since` on a new socket instead, so that no server answer can keep it looping.
const DEFAULT_CATCH_UP_PAGES = 10;
const DEFAULT_MAX_MESSAGES = 1_000;
// WebSocket attempts in a row that never open before the client falls back to SSE and posts.
const DEFAULT_FALLBACK_AFTER = 3;
// Messages waiting for a connection; past this `send()` refuses rather than hoard memory.
const MAX_QUEUED = 100;
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;
// The runtime answers `ping` with `pong` without waking the room, so a heartbeat is cheap; it
// catches connections that died without a close frame (sleeping laptops, dropped Wi-Fi).
const PING_EVERY_MS = 25_000;
const PING_TIMEOUT_MS = 10_000;
const OPEN = 1;
// The server's default edit window, for servers whose welcome does not say.
const DEFAULT_EDIT_WINDOW_S = 900;
// A `typing` frame goes out at most this often; the server shows it for 6 s, and drops more than
// one per socket in 2 s.
const TYPING_EVERY_MS = 3_000;
const SERVER_TYPING_EVERY_MS = 2_000;
const TYPING_SHOWN_MS = 6_000;
// Own message ids remembered per room in sessionStorage (so a reloaded tab still knows what it may edit).
const OWN_IDS_KEPT = 200;
const CLIENT_STORAGE_KEY = 'edge-chat:client';
// Close codes after which reconnecting with the same credentials cannot help: 1008 (closed for
// flooding), 4000 (kicked by a moderator), 4401 (ticket problem), 4403 (forbidden: wrong room,
// banned), 4429 (too many connections).
export const TERMINAL_CLOSE_CODES = Object.freeze([1008, 4000, 4401, 4403, 4429]);
const TERMINAL = new Set(TERMINAL_CLOSE_CODES);

/** A refusal: `code` is the server's error code, or `not_connected` / `connection_lost` / `closed`. */
export class ChatError extends Error {
  constructor(code, message = code) {
    super(message);
    this.name = 'ChatError';
    this.code = code;
  }
}

/** An event of a `ChatRoom`: `detail` is the frame or the state it announces. */
export class ChatEvent extends Event {
  constructor(type, detail, extra) {
    super(type);
    this.detail = detail;
    Object.assign(this, extra);
  }
}

export function isValidRoom(name) {
  return typeof name === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(name) && !/^\.+$/.test(name);
}

export function isValidNick(nick) {
  return typeof nick === 'string' && /^[A-Za-z0-9_.-]{1,32}$/.test(nick);
}

/** Opens a room and keeps it connected until `close()`. */
export function connect(options) {
  return new ChatRoom(options);
}

export class ChatRoom extends EventTarget {
  #options;
  #WebSocket;
  #wantedNick;
  #ws = null;
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #pongTimer = null;
  #lastHeardAt = 0;
  #generation = 0;
  #closedByApp = false;
  #welcomed = false;
  // What the current socket asked for, and what it has still to answer.
  #request = null;
  #expectJoinError = false;
  #reclaimNick = null;
  #inFlight = [];
  #queue = [];
  #held = null;
  #lastError = null;
  #probes = null;
  #fallback;

  #status = 'connecting';
  #closeReason = null;
  /** Whether a 4401 was already answered with a fresh ticket since the room was last open. */
  #freshTicketTried = false;
  #retryAt = null;
  #catchingUp = false;
  #nick = null;
  #you = null;
  #users = Object.freeze([]);
  #messages = Object.freeze([]);
  #lastId = null;
  /** The highest `seq` seen: the `after` of the next reconnect. */
  #seq = null;
  /** The server numbers changes (its welcome has `seq`), and so dedupes resends by `cid`. */
  #sequenced = false;
  #editWindowS = DEFAULT_EDIT_WINDOW_S;
  #clientId;
  /** Messages sent (or waiting to be) whose echo has not come yet, in the order sent. */
  #outbox = [];
  #outboxView = Object.freeze([]);
  #ownIds;
  #typing = new Map();
  #typingView = Object.freeze([]);
  #typingTimer = null;
  #typingSentAt = 0;
  /** An own message was sent since the last `typing`: for the others, this client stopped typing. */
  #typingEnded = false;

  constructor({
    url, room, nick, ticket, getTicket, WebSocket, EventSource, fallbackAfter, batch = true, maxMessages, catchUpPages,
    clientId,
  } = {}) {
    super();
    if (!isValidRoom(room)) throw new TypeError(`edge-chat-client: ${JSON.stringify(room)} is not a room name`);
    const base = new URL(String(url));
    base.protocol = { 'ws:': 'http:', 'wss:': 'https:' }[base.protocol] ?? base.protocol;
    this.#WebSocket = WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('edge-chat-client: no global WebSocket here; pass one as the `WebSocket` option');
    }
    if (getTicket !== undefined && typeof getTicket !== 'function') throw new TypeError('getTicket must be a function');
    this.#options = {
      base,
      room,
      ticket,
      getTicket,
      batch: Boolean(batch),
      maxMessages: positive(maxMessages, DEFAULT_MAX_MESSAGES),
      catchUpPages: positive(catchUpPages, DEFAULT_CATCH_UP_PAGES),
    };
    this.#wantedNick = nick ?? null;
    if (clientId !== undefined && !isValidClientId(clientId)) {
      throw new TypeError('edge-chat-client: clientId must be 1 to 64 of A-Z a-z 0-9 _ -');
    }
    this.#clientId = clientId ?? tabClientId();
    this.#ownIds = new Set(loadOwnIds(room));
    this.#fallback = new TransportFallback(withSlash(base), EventSource ?? globalThis.EventSource, {
      after: positive(fallbackAfter, DEFAULT_FALLBACK_AFTER),
    });
    this.#watchBrowser();
    this.#open();
  }

  get room() {
    return this.#options.room;
  }

  /** `websocket`, or `sse` once WebSockets failed to connect several times in a row while HTTP worked. */
  get transport() {
    return this.#fallback.transport;
  }

  /** `connecting` (the first attempt), `open`, `reconnecting`, or `closed` (for good). */
  get status() {
    return this.#status;
  }

  /** Why the room closed for good: `{ code, reason, error }`, else null. */
  get closeReason() {
    return this.#closeReason;
  }

  /** When the next attempt starts (ms since the epoch) while waiting to reconnect, else null. */
  get retryAt() {
    return this.#retryAt;
  }

  /** True while a reconnected socket reads what it missed from the history route. */
  get catchingUp() {
    return this.#catchingUp;
  }

  /** The nick the server gave this client, once welcomed. */
  get nick() {
    return this.#nick;
  }

  /** Who this client is in the room, once welcomed: `{ nick, id, role }` (`id`: the ticket's `sub`, or null). */
  get you() {
    return this.#you;
  }

  /** Everyone in the room, this client included; a new frozen array after each change. */
  get users() {
    return this.#users;
  }

  /** The newest messages (up to `maxMessages`) in id order; a new frozen array after each change. */
  get messages() {
    return this.#messages;
  }

  /** The id of the newest message taken. */
  get lastId() {
    return this.#lastId;
  }

  /** The highest sequence number seen (the `after` of the next reconnect), or null before a server that has them. */
  get lastSeq() {
    return this.#seq;
  }

  /** This client instance's id, sent as `?client=`: the server knows this tab by it (authorship, dedupe). */
  get clientId() {
    return this.#clientId;
  }

  /** Messages sent and not yet stored, oldest first: `{ cid, text, replyTo, queuedAt }`; a new frozen array after each change. */
  get outbox() {
    return this.#outboxView;
  }

  /** Who is typing, in the order they started: `{ nick, until }` (until: local ms); a new frozen array after each change. */
  get typingUsers() {
    return this.#typingView;
  }

  /** How long after posting its author may edit a message, in ms (the welcome's `edit_window_s`, else 900 s). */
  get editWindowMs() {
    return this.#editWindowS * 1000;
  }

  /** Whether this client wrote `message`: its ticket identity, or a message this tab posted. */
  isOwn(message) {
    if (!message) return false;
    if (this.#you?.id != null && message.uid === this.#you.id) return true;
    return this.#ownIds.has(message.id);
  }

  /** Whether this client may still edit `message` (its own, not deleted, within the edit window). */
  canEdit(message, now = Date.now()) {
    return this.isOwn(message) && !message.deleted && now - message.at < this.editWindowMs;
  }

  /**
   * Posts `text`. Resolves with the stored message (its id and time) once the server echoes it;
   * rejects with a `ChatError` carrying the server's error code. While not connected the message
   * waits and goes out once the room is open again.
   */
  send(text, { replyTo } = {}) {
    const cid = randomId();
    const frame = { type: 'message', text: String(text), cid };
    this.#typingEnded = true;
    if (replyTo !== undefined && replyTo !== null) frame.reply_to = replyTo;
    const entry = Object.freeze({ cid, text: frame.text, replyTo: frame.reply_to ?? null, queuedAt: Date.now() });
    const sent = this.#submit('message', frame, { kind: 'message', text: frame.text, cid }, entry);
    // Out of the outbox once answered, either way; the rejection is the caller's to handle.
    sent.catch(() => {}).finally(() => this.#leaveOutbox(cid));
    return sent;
  }

  /** Replaces the text of own message `id` (within the edit window); resolves with the `edited` frame. */
  edit(id, text) {
    return this.#submit('edit', { type: 'edit', id, text: String(text) }, { kind: 'edit', id, text: String(text) });
  }

  /** Toggles this client's reaction `emoji` on message `id`; resolves with the `reactions` frame it caused. */
  react(id, emoji) {
    return this.#submit('react', { type: 'react', id, emoji: String(emoji) }, { kind: 'react', id, emoji: String(emoji) });
  }

  /**
   * Tells the others this client is typing: sends `typing` at most every 3 s, and only while open.
   * Returns whether a frame went out. Call it on every keystroke.
   */
  typing() {
    const now = Date.now();
    // After an own message, which ends this client's typing for the others, the next keystroke says
    // so again as soon as the server's throttle lets it through.
    const every = this.#typingEnded ? SERVER_TYPING_EVERY_MS : TYPING_EVERY_MS;
    if (this.#status !== 'open' || now - this.#typingSentAt < every) return false;
    this.#typingSentAt = now;
    this.#typingEnded = false;
    this.#ws.send('{"type":"typing"}');
    return true;
  }

  /** Asks for another nick; resolves with it once the room announces the rename. */
  rename(nick) {
    if (this.#status === 'open' && nick === this.#nick) return Promise.resolve(nick);
    return this.#submit('nick', { type: 'nick', nick: String(nick) }, { kind: 'nick', nick: String(nick) }).then(
      (renamed) => {
        this.#wantedNick = renamed;
        return renamed;
      },
    );
  }

  // ---- moderation (ticket role `moderator`) ---------------------------------------------
  // Each resolves with the `moderated` frame the room broadcasts for it, and rejects with a
  // `ChatError` carrying the server's code (`forbidden`, `not_found`, …) as `send()` does.

  /**
   * Deletes message `id`: everyone gets `deleted`, and history keeps only its tombstone. A
   * moderator's delete resolves with the `moderated` frame; an author's own, with the `deleted` frame.
   */
  delete(id) {
    if (this.#you?.role === 'moderator') return this.#moderate({ type: 'delete', id });
    return this.#submit('delete', { type: 'delete', id }, { kind: 'delete', id });
  }

  /** Closes every socket of `nick` with 4000. */
  kick(nick) {
    return this.#moderate({ type: 'kick', nick: String(nick) });
  }

  /** Kicks `nick` and refuses them until `duration` seconds have passed (without one, for good). */
  ban(nick, { duration } = {}) {
    return this.#moderate({ type: 'ban', nick: String(nick), ...(duration == null ? {} : { duration }) });
  }

  /** Lifts the bans recorded under `nick`. */
  unban(nick) {
    return this.#moderate({ type: 'unban', nick: String(nick) });
  }

  /** Keeps `nick` from posting for `duration` seconds. */
  mute(nick, { duration } = {}) {
    return this.#moderate({ type: 'mute', nick: String(nick), duration });
  }

  /** At most one message per person per `seconds` (moderators excepted); 0 turns it off. */
  slow(seconds) {
    return this.#moderate({ type: 'slow', seconds });
  }

  /** Deletes the whole history of the room. */
  clear() {
    return this.#moderate({ type: 'clear' });
  }

  /** Connects at once: while waiting to retry, or after a close for good by the server. */
  reconnect() {
    if (this.#closedByApp || this.#ws) return;
    if (this.#status === 'closed') this.#watchBrowser();
    this.#closeReason = null;
    this.#attempt = 0;
    this.#open();
  }

  /** Leaves the room for good. */
  close() {
    if (this.#closedByApp) return;
    this.#closedByApp = true;
    // Closed for good by the server already: keep its reason.
    if (this.#status === 'closed') return;
    const ws = this.#ws;
    this.#forgetSocket();
    ws?.close(1000, 'leaving');
    this.#finish({ code: 1000, reason: 'closed by the client', error: null });
  }

  // ---- the connection -----------------------------------------------------------------

  async #open() {
    this.#clearRetry();
    const generation = ++this.#generation;
    this.#setStatus(this.#welcomed || this.#attempt > 0 ? 'reconnecting' : 'connecting');
    let ticket = this.#options.ticket;
    if (this.#options.getTicket) {
      try {
        ticket = await this.#options.getTicket();
      } catch {
        if (generation === this.#generation && !this.#closedByApp) this.#retryLater();
        return;
      }
      if (generation !== this.#generation || this.#closedByApp) return;
    }

    const url = new URL(`chat/${encodeURIComponent(this.room)}`, withSlash(this.#options.base));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const nick = this.#nick ?? this.#wantedNick;
    if (nick) url.searchParams.set('nick', nick);
    // Once in the room, ask for every change after the last one seen; from a server without
    // sequence numbers, for the messages after the last one seen (0 when there was none).
    const after = this.#sequenced ? this.#seq : null;
    const since = after !== null ? null : this.#lastId ?? (this.#welcomed ? 0 : null);
    if (after !== null) url.searchParams.set('after', String(after));
    if (since !== null) url.searchParams.set('since', String(since));
    url.searchParams.set('client', this.#clientId);
    // Tickets travel in the query: browsers cannot set headers on a WebSocket.
    if (ticket) url.searchParams.set('ticket', String(ticket));
    this.#request = { nick, since, after, ticket, reconnect: this.#welcomed };
    this.#lastError = null;

    let ws;
    const Socket = this.#fallback.socket ?? this.#WebSocket;
    try {
      ws = this.#options.batch ? new Socket(url.href, [BATCH_PROTOCOL]) : new Socket(url.href);
    } catch {
      this.#retryLater();
      return;
    }
    this.#ws = ws;
    let opened = false;
    ws.addEventListener('close', async () => {
      // A socket the app closed or replaced says nothing about whether WebSockets get through.
      if (this.#ws !== ws) return;
      if (await this.#fallback.closed(opened)) this.#emit('transport', this.transport);
    });
    ws.addEventListener('open', () => {
      opened = true;
      this.#fallback.opened();
      if (this.#ws !== ws) return;
      this.#lastHeardAt = Date.now();
      this.#pingTimer = setInterval(() => this.#probe(), PING_EVERY_MS);
    });
    ws.addEventListener('message', (event) => this.#ws === ws && this.#onData(ws, event.data));
    ws.addEventListener('close', (event) => this.#ws === ws && this.#onClose(event.code, event.reason));
    // A failed connection is handled by its `close`; the listener keeps EventEmitter-based sockets
    // (the `ws` package) from throwing an unhandled `error`.
    ws.addEventListener('error', () => {});
  }

  #onClose(code, reason) {
    this.#forgetSocket();
    if (this.#closedByApp) return;
    // A ticket that expired (or went bad) is worth one more attempt when the app can fetch a
    // fresh one: `getTicket` runs again before it.
    if (code === 4401 && this.#options.getTicket && !this.#freshTicketTried) {
      this.#freshTicketTried = true;
      this.#retryLater();
      return;
    }
    if (TERMINAL.has(code)) {
      this.#finish({ code, reason: String(reason ?? ''), error: this.#lastError });
      return;
    }
    this.#retryLater();
  }

  /**
   * Lets go of the current socket: what it had in flight may or may not have been stored. Messages
   * go back to the outbox, to be resent once the next socket has caught up: a server that numbers
   * changes dedupes them by `cid`. Anything else is refused (`connection_lost`).
   */
  #forgetSocket() {
    this.#ws = null;
    this.#generation++;
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    this.#pingTimer = this.#pongTimer = null;
    this.#held = null;
    this.#catchingUp = false;
    this.#expectJoinError = false;
    const resend = [];
    for (const pending of this.#inFlight.splice(0)) {
      if (pending.kind === 'message' && this.#sequenced) resend.push(pending);
      else pending.reject(new ChatError('connection_lost', 'The connection dropped before the server answered.'));
    }
    this.#queue.unshift(...resend);
    this.#setTyping(() => this.#typing.clear());
  }

  #retryLater() {
    const delay = backoffDelay(this.#attempt++);
    this.#retryAt = Date.now() + delay;
    this.#retryTimer = setTimeout(() => this.#open(), delay);
    this.#setStatus('reconnecting');
  }

  #clearRetry() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#retryAt = null;
  }

  #finish(closeReason) {
    this.#clearRetry();
    this.#unwatchBrowser();
    for (const pending of [...this.#inFlight.splice(0), ...this.#queue.splice(0)]) {
      pending.reject(new ChatError('closed', 'The room is closed.'));
    }
    this.#closeReason = closeReason;
    this.#setStatus('closed');
  }

  /** Gives up on the current socket without waiting for its close handshake, and reconnects. */
  #drop() {
    const ws = this.#ws;
    if (!ws) return;
    this.#forgetSocket();
    ws.close();
    this.#retryLater();
  }

  /** Sends `ping`; if nothing at all comes back in time, the connection is dead. */
  #probe() {
    const ws = this.#ws;
    if (ws?.readyState !== OPEN || this.#pongTimer) return;
    const sentAt = Date.now();
    ws.send('ping');
    this.#pongTimer = setTimeout(() => {
      this.#pongTimer = null;
      if (this.#ws === ws && this.#lastHeardAt < sentAt) this.#drop();
    }, PING_TIMEOUT_MS);
  }

  /** In a browser: reconnect when the network or the tab comes back, drop when the network goes. */
  #watchBrowser() {
    const win = globalThis.window;
    const doc = globalThis.document;
    if (typeof win?.addEventListener !== 'function' || typeof doc?.addEventListener !== 'function') return;
    const wake = () => {
      if (globalThis.navigator?.onLine === false || doc.visibilityState === 'hidden') return;
      if (this.#retryTimer !== null) this.#open();
      else this.#probe();
    };
    const offline = () => this.#drop();
    win.addEventListener('online', wake);
    win.addEventListener('offline', offline);
    doc.addEventListener('visibilitychange', wake);
    this.#probes = () => {
      win.removeEventListener('online', wake);
      win.removeEventListener('offline', offline);
      doc.removeEventListener('visibilitychange', wake);
    };
  }

  #unwatchBrowser() {
    this.#probes?.();
    this.#probes = null;
  }

  // ---- requests -----------------------------------------------------------------------

  #submit(kind, frame, request, outboxEntry) {
    if (this.#status === 'closed') return Promise.reject(new ChatError('closed', 'The room is closed.'));
    if (this.#status !== 'open' && this.#queue.length >= MAX_QUEUED) {
      return Promise.reject(new ChatError('not_connected', 'Not connected, and too many messages are waiting.'));
    }
    return new Promise((resolve, reject) => {
      const pending = { kind, frame, request, resolve, reject };
      if (outboxEntry) {
        this.#outbox.push(outboxEntry);
        this.#publishOutbox();
      }
      if (this.#status === 'open') this.#transmit(pending);
      else this.#queue.push(pending);
    });
  }

  #leaveOutbox(cid) {
    const index = this.#outbox.findIndex((entry) => entry.cid === cid);
    if (index < 0) return;
    this.#outbox.splice(index, 1);
    this.#publishOutbox();
  }

  #publishOutbox() {
    this.#outboxView = Object.freeze([...this.#outbox]);
    this.#emit('outbox', this.#outboxView);
  }

  // The room handles one socket's frames in order and answers each in order: a stored message
  // is echoed to its sender, a rename is broadcast, a refusal is an `error` frame to the sender.
  // So the oldest request in flight is the one the next answer is about.
  #transmit(pending) {
    this.#inFlight.push(pending);
    this.#ws.send(JSON.stringify(pending.frame));
  }

  // With the batch subprotocol, requests that waited for the connection go out as one array frame
  // (up to 64 at a time), whose items the room handles and answers in order as if sent one by one.
  #transmitAll(waiting) {
    if (this.#ws.protocol !== BATCH_PROTOCOL || waiting.length < 2) {
      for (const pending of waiting) this.#transmit(pending);
      return;
    }
    for (let start = 0; start < waiting.length; start += MAX_ARRAY_ITEMS) {
      const chunk = waiting.slice(start, start + MAX_ARRAY_ITEMS);
      this.#inFlight.push(...chunk);
      this.#ws.send(JSON.stringify(chunk.map((pending) => pending.frame)));
    }
  }

  #answer(kind, value, id) {
    const pending = this.#inFlight[0];
    if (pending?.kind !== kind || (id !== undefined && pending.frame.id !== id)) return;
    this.#inFlight.shift().resolve(value);
  }

  #moderate(frame) {
    return this.#submit('moderate', frame, { kind: 'moderate', action: frame.type, frame });
  }

  // ---- frames from the server -----------------------------------------------------------

  #onData(ws, data) {
    this.#lastHeardAt = Date.now();
    // `pong` answers the heartbeat; every real frame is a JSON object, or with the batch
    // subprotocol an array of them.
    if (typeof data !== 'string' || !(data.startsWith('{') || data.startsWith('['))) return;
    let parsed;
    try {
      parsed = JSON.parse(data);
    } catch {
      return;
    }
    for (const frame of Array.isArray(parsed) ? parsed : [parsed]) {
      if (this.#ws !== ws) return;
      if (frame && typeof frame === 'object' && typeof frame.type === 'string') this.#onFrame(frame);
    }
  }

  #onFrame(frame) {
    this.#emit('frame', frame);
    switch (frame.type) {
      case 'welcome':
        return this.#onWelcome(frame);
      case 'message':
        return this.#onMessage(frame);
      case 'joined':
        return this.#onJoined(frame);
      case 'left':
        return this.#onLeft(frame);
      case 'renamed':
        return this.#onRenamed(frame);
      case 'deleted':
      case 'moderated':
        return this.#onModeration(frame);
      case 'edited':
        this.#answer('edit', frame, frame.id);
        return this.#onChange(frame);
      case 'reactions':
        this.#answer('react', frame, frame.id);
        return this.#onChange(frame);
      case 'typing':
        return this.#onTyping(frame);
      case 'error':
        return this.#onError(frame);
    }
  }

  #onWelcome(frame) {
    const { nick: asked, since, after, reconnect } = this.#request;
    this.#welcomed = true;
    const history = Array.isArray(frame.history) ? frame.history : [];
    if (Number.isSafeInteger(frame.seq)) {
      this.#sequenced = true;
      // A welcome after `after` may hold only the earliest of the changes: the catch-up below reads
      // on until none is left. Otherwise (nothing changed, or a first welcome) the room's seq is ours.
      if (after === null || history.length === 0) this.#noteSeq(frame.seq);
    }
    if (Number.isSafeInteger(frame.edit_window_s) && frame.edit_window_s >= 0) this.#editWindowS = frame.edit_window_s;
    // A moderator cleared the history while this client was away: what it holds is gone.
    if (frame.cleared === true) this.#messages = Object.freeze([]);
    this.#nick = String(frame.nick);
    const you = frame.you && typeof frame.you === 'object' ? frame.you : {};
    this.#you = Object.freeze({
      nick: this.#nick,
      id: typeof you.id === 'string' ? you.id : null,
      role: typeof you.role === 'string' ? you.role : 'member',
    });
    // A nick asked for but not given is explained by the `error` frame that follows the welcome.
    this.#expectJoinError = asked != null && asked !== this.#nick;
    this.#emit('welcome', frame, { resumed: reconnect });
    this.#setUsers(Array.isArray(frame.users) ? frame.users.map(String) : [this.#nick]);
    // After `after`, a welcome that brought any change may have been cut short (at 100 messages,
    // or earlier by the server's byte budget): the history route tells whether more changed.
    if (after !== null && history.length > 0) {
      this.#held = [];
      this.#catchUpChanges(this.#ws, history);
      return;
    }
    // After `since` likewise, for the messages after the last one seen.
    if (since !== null && history.length > 0) {
      this.#held = [];
      this.#take(history, 'welcome');
      this.#catchUp(this.#ws);
      return;
    }
    this.#take(history, 'welcome');
    this.#becomeOpen();
  }

  /**
   * A welcome after `since` may have more missed messages behind it: read them from the
   * history route, holding live frames back so that everything is taken in id order. At most
   * `catchUpPages` pages; past that, or if a page fails or does not advance, resume on a new
   * socket with the later `since`, backing off as after any failed attempt.
   */
  async #catchUp(ws) {
    this.#catchingUp = true;
    this.#setStatus(this.#status);
    let complete = false;
    try {
      for (let pages = 0; pages < this.#options.catchUpPages && !complete; pages++) {
        const since = this.#lastId;
        const messages = await this.#historyPage('since', since);
        if (this.#ws !== ws) return;
        complete = messages.length === 0;
        this.#take(messages, 'history');
        if (!complete && this.#lastId === since) throw new Error('a history page that does not advance');
      }
    } catch {
      if (this.#ws === ws) this.#drop();
      return;
    }
    this.#endCatchUp(complete);
  }

  /**
   * Reads every change after the resumed welcome's from the history route (`after=SEQ`, pages of
   * the changes with the lowest seq), then takes them all at once in id order: a message posted
   * while away may come on a later page than a newer one (if it was also edited later), and must
   * still be taken as new. Bounded and failing like `#catchUp`; on failure nothing was taken, so
   * the next socket resumes from the same seq.
   */
  async #catchUpChanges(ws, first) {
    this.#catchingUp = true;
    this.#setStatus(this.#status);
    const changed = new Map();
    let seq = this.#seq;
    const merge = (messages) => {
      for (const message of messages) {
        if (!isMessage(message)) continue;
        if (!(changed.get(message.id)?.seq >= message.seq)) changed.set(message.id, message);
        if (Number.isSafeInteger(message.seq) && message.seq > seq) seq = message.seq;
      }
    };
    merge(first);
    let complete = false;
    try {
      for (let pages = 0; pages < this.#options.catchUpPages && !complete; pages++) {
        const from = seq;
        const messages = await this.#historyPage('after', from);
        if (this.#ws !== ws) return;
        complete = messages.length === 0;
        merge(messages);
        if (!complete && seq === from) throw new Error('a history page that does not advance');
      }
    } catch {
      if (this.#ws === ws) this.#drop();
      return;
    }
    this.#take([...changed.values()].sort((a, b) => a.id - b.id), 'history');
    this.#endCatchUp(complete);
  }

  /**
   * Ends a catch-up. Still behind after the page bound, though every page was new: resume from the
   * later position (`since` or seq) on a new socket at once. Otherwise release the live frames held
   * meanwhile, in order, and go live.
   */
  #endCatchUp(complete) {
    if (!complete) {
      this.#attempt = 0;
      this.#drop();
      return;
    }
    const held = this.#held;
    this.#held = null;
    this.#release(held);
    this.#becomeOpen();
  }

  /** One page of the history route: `key` is `since` (an id) or `after` (a seq). */
  async #historyPage(key, value) {
    const url = new URL(`chat/${encodeURIComponent(this.room)}/history`, withSlash(this.#options.base));
    url.searchParams.set(key, String(value));
    url.searchParams.set('limit', String(PAGE_SIZE));
    if (this.#request.ticket) url.searchParams.set('ticket', String(this.#request.ticket));
    const response = await fetch(url);
    if (!response.ok) throw new Error(`history answered ${response.status}`);
    const { messages } = await response.json();
    if (!Array.isArray(messages)) throw new Error('history without messages');
    return messages;
  }

  #becomeOpen() {
    this.#attempt = 0;
    this.#freshTicketTried = false;
    this.#catchingUp = false;
    this.#clearRetry();
    // What waited goes out before anything a listener of the `open` status sends.
    const previous = this.#status;
    this.#status = 'open';
    this.#transmitAll(this.#queue.splice(0));
    this.#emitStatus(previous);
  }

  #onMessage(frame) {
    if (typeof frame.cid === 'string') {
      // Our echo (the server sends `cid` to its sender alone), or the original again after a resend.
      this.#rememberOwn(frame.id);
      const index = this.#inFlight.findIndex((pending) => pending.request.cid === frame.cid);
      if (index >= 0) this.#inFlight.splice(index, 1)[0].resolve(frame);
      this.#leaveOutbox(frame.cid);
    } else if (!this.#sequenced && frame.nick === this.#nick) {
      // A server without cids answers in order.
      this.#answer('message', frame);
    }
    if (this.#typing.has(frame.nick)) this.#setTyping(() => this.#typing.delete(frame.nick));
    if (this.#held) this.#held.push(frame);
    else this.#take([frame], 'live');
  }

  /** Live frames held back during a catch-up, in the order they came. */
  #release(held) {
    let messages = [];
    for (const frame of held) {
      if (frame.type === 'message') {
        messages.push(frame);
        continue;
      }
      this.#take(messages, 'live');
      messages = [];
      if (frame.type === 'edited' || frame.type === 'reactions') this.#applyChange(frame);
      else this.#applyModeration(frame);
    }
    this.#take(messages, 'live');
  }

  // `edited` and `reactions` change a message in the window; during a catch-up they wait in order.
  #onChange(frame) {
    if (this.#held) this.#held.push(frame);
    else this.#applyChange(frame);
  }

  #applyChange(frame) {
    this.#noteSeq(frame.seq);
    const message = this.#update(frame.id, (old) => {
      // Already newer (a catch-up page brought its later state).
      if (old.deleted || old.seq >= frame.seq) return null;
      if (frame.type === 'edited') {
        return { ...old, text: String(frame.text), edited_at: frame.edited_at, ...seqOf(frame) };
      }
      const { reactions, ...rest } = old;
      const counts = frame.counts && typeof frame.counts === 'object' ? frame.counts : {};
      return { ...rest, ...(Object.keys(counts).length ? { reactions: counts } : {}), ...seqOf(frame) };
    });
    this.#emit(frame.type, frame, { message });
  }

  /** Replaces message `id` in the window with `change(old)` (unless null); returns the new one or null. */
  #update(id, change) {
    const index = this.#messages.findIndex((message) => message.id === id);
    if (index < 0) return null;
    const previous = this.#messages[index];
    const message = change(previous);
    if (!message) return null;
    const messages = [...this.#messages];
    messages[index] = message;
    this.#messages = Object.freeze(messages);
    this.#emit('updated', message, { previous });
    return message;
  }

  #onTyping(frame) {
    const nick = String(frame.nick);
    if (nick === this.#nick) return;
    // `until` is the server's clock; a client whose clock is off still shows it for the usual 6 s.
    const left = Number(frame.until) - Date.now();
    const until = Date.now() + (left > 0 && left <= TYPING_SHOWN_MS ? left : TYPING_SHOWN_MS);
    this.#setTyping(() => {
      this.#typing.delete(nick);
      this.#typing.set(nick, until);
    });
  }

  /** Runs `change` on the typing set, drops what expired, and announces a change. */
  #setTyping(change) {
    const before = this.#typingView;
    change();
    const now = Date.now();
    for (const [nick, until] of this.#typing) if (until <= now) this.#typing.delete(nick);
    clearTimeout(this.#typingTimer);
    this.#typingTimer = null;
    if (this.#typing.size) {
      const next = Math.min(...this.#typing.values());
      this.#typingTimer = setTimeout(() => this.#setTyping(() => {}), next - now + 1);
    }
    const view = [...this.#typing].map(([nick, until]) => Object.freeze({ nick, until }));
    const same = view.length === before.length && view.every((entry, i) => entry.nick === before[i].nick &&
      entry.until === before[i].until);
    if (same) return;
    this.#typingView = Object.freeze(view);
    this.#emit('typing', this.#typingView);
  }

  // `deleted` and `moderated` change the window (a tombstone, a cleared history), so while a
  // catch-up holds messages back they wait with them.
  #onModeration(frame) {
    if (frame.type === 'deleted') this.#answer('delete', frame, frame.id);
    if (frame.type === 'moderated' && frame.by === this.#nick) {
      const pending = this.#inFlight[0];
      const target = pending?.frame.nick;
      if (pending?.kind === 'moderate' && pending.frame.type === frame.action &&
        (target === undefined || sameNick(String(frame.target), target))) {
        this.#answer('moderate', frame);
      }
    }
    if (this.#held) this.#held.push(frame);
    else this.#applyModeration(frame);
  }

  #applyModeration(frame) {
    if (frame.type === 'deleted') {
      this.#noteSeq(frame.seq);
      const tombstone = this.#update(frame.id, (old) => {
        if (old.deleted || old.seq >= frame.seq) return null;
        const { id, nick, at, uid } = old;
        return { type: 'message', id, nick, deleted: true, at, ...(uid === undefined ? {} : { uid }), ...seqOf(frame) };
      });
      this.#emit('deleted', frame, { message: tombstone });
      return;
    }
    if (frame.action === 'clear' && this.#messages.length) this.#messages = Object.freeze([]);
    this.#emit('moderated', frame);
  }

  #onJoined(frame) {
    const nick = String(frame.nick);
    this.#emit('joined', frame);
    if (!this.#users.includes(nick)) this.#setUsers([...this.#users, nick]);
  }

  #onLeft(frame) {
    const nick = String(frame.nick);
    this.#emit('left', frame);
    this.#setUsers(this.#users.filter((user) => user !== nick));
    if (this.#typing.has(nick)) this.#setTyping(() => this.#typing.delete(nick));
    // After a reconnect the old socket may have held our nick a little longer: take it back.
    if (this.#reclaimNick && sameNick(nick, this.#reclaimNick) && this.#status === 'open') {
      const wanted = this.#reclaimNick;
      this.#reclaimNick = null;
      this.#submit('nick', { type: 'nick', nick: wanted }, { kind: 'nick', nick: wanted, reclaim: true }).catch(() => {});
    }
  }

  #onRenamed(frame) {
    const from = String(frame.from);
    const to = String(frame.to);
    const mine = from === this.#nick;
    if (mine) {
      this.#nick = to;
      if (this.#you) this.#you = Object.freeze({ ...this.#you, nick: to });
    }
    const users = this.#users.map((user) => (user === from ? to : user));
    if (this.#typing.has(from)) this.#setTyping(() => this.#typing.delete(from));
    this.#emit('renamed', frame, { mine });
    this.#setUsers(users.includes(to) ? users : [...users, to]);
    if (mine) this.#answer('nick', to);
  }

  #onError(frame) {
    const code = String(frame.code);
    const message = typeof frame.message === 'string' && frame.message ? frame.message : code;
    this.#lastError = code;
    let request = null;
    if (this.#expectJoinError) {
      this.#expectJoinError = false;
      request = { kind: 'join', nick: this.#request.nick, reconnect: this.#request.reconnect };
      if (code === 'nick_taken' && request.reconnect) this.#reclaimNick = request.nick;
    } else if (this.#inFlight.length) {
      const pending = this.#inFlight.shift();
      request = pending.request;
      pending.reject(new ChatError(code, message));
    }
    this.#emit('error', frame, { request });
  }

  // ---- state ----------------------------------------------------------------------------

  /**
   * Takes each message once, in id order: only ids above the last one taken are new. An older one
   * with a later `seq` (a resumed welcome brings the current state of what changed) replaces the
   * one in the window.
   */
  #take(list, source) {
    const added = [];
    for (const message of list) {
      if (!isMessage(message)) continue;
      this.#noteSeq(message.seq);
      if (this.#lastId !== null && message.id <= this.#lastId) {
        if (Number.isSafeInteger(message.seq)) this.#update(message.id, (old) => (old.seq >= message.seq ? null : message));
        continue;
      }
      this.#lastId = message.id;
      added.push(message);
    }
    if (!added.length) return;
    this.#messages = Object.freeze(this.#messages.concat(added).slice(-this.#options.maxMessages));
    for (const message of added) this.#emit('message', message, { source });
    this.#emit('messages', { added, source });
  }

  #setUsers(users) {
    this.#users = Object.freeze(users);
    this.#emit('users', this.#users);
  }

  #setStatus(status) {
    const previous = this.#status;
    this.#status = status;
    this.#emitStatus(previous);
  }

  #emitStatus(previous) {
    this.#emit('status', {
      status: this.#status,
      previous,
      retryAt: this.#retryAt,
      catchingUp: this.#catchingUp,
      closeReason: this.#closeReason,
    });
  }

  #noteSeq(seq) {
    if (Number.isSafeInteger(seq) && (this.#seq === null || seq > this.#seq)) this.#seq = seq;
  }

  #rememberOwn(id) {
    if (!Number.isSafeInteger(id) || this.#ownIds.has(id)) return;
    this.#ownIds.add(id);
    saveOwnIds(this.room, [...this.#ownIds].slice(-OWN_IDS_KEPT));
  }

  #emit(type, detail, extra) {
    this.dispatchEvent(new ChatEvent(type, detail, extra));
  }
}

/** Jittered exponential backoff: up to 0.5 s at first, doubling up to 10 s; at least half of each. */
function backoffDelay(attempt) {
  const ceiling = Math.min(MAX_BACKOFF_MS, MIN_BACKOFF_MS * 2 ** attempt);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

/** A stored message, or the tombstone of a deleted one (no `text`, `deleted: true`). */
function isMessage(value) {
  return (
    Number.isSafeInteger(value?.id) &&
    typeof value.nick === 'string' &&
    (typeof value.text === 'string' || value.deleted === true)
  );
}

function seqOf(frame) {
  return Number.isSafeInteger(frame.seq) ? { seq: frame.seq } : {};
}

export function isValidClientId(id) {
  return typeof id === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(id);
}

/** 128 random bits as 32 hex digits: a `cid` or a client id (getRandomValues works outside secure contexts too). */
function randomId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

function session() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    // A sandboxed frame throws on access.
    return null;
  }
}

/**
 * One client id per tab (sessionStorage), so that a reload is the same client. Where there is no
 * sessionStorage (Node, sandboxed frames), a new one per `ChatRoom`: several rooms in one process may
 * be several people (bots), and each keeps its id across its own reconnects.
 */
function tabClientId() {
  const storage = session();
  try {
    const stored = storage?.getItem(CLIENT_STORAGE_KEY);
    if (isValidClientId(stored)) return stored;
    const id = randomId();
    storage?.setItem(CLIENT_STORAGE_KEY, id);
    return id;
  } catch {
    // storage full or refused: this instance's own id
    return randomId();
  }
}

function loadOwnIds(room) {
  try {
    const ids = JSON.parse(session()?.getItem(`edge-chat:own:${room}`) ?? '[]');
    return Array.isArray(ids) ? ids.filter(Number.isSafeInteger) : [];
  } catch {
    return [];
  }
}

function saveOwnIds(room, ids) {
  try {
    session()?.setItem(`edge-chat:own:${room}`, JSON.stringify(ids));
  } catch {
    // not remembered across reloads, that is all
  }
}

function sameNick(a, b) {
  return a.toLowerCase() === b.toLowerCase();
}

function positive(value, fallback) {
  return Number.isSafeInteger(value) && value > 0 ? value : fallback;
}

/** So that a base URL with a path (`https://host/chat-app`) keeps it when routes are resolved against it. */
function withSlash(base) {
  const url = new URL(base);
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  url.hash = '';
  return url;
}
