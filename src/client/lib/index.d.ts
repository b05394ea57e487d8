// Types of edge-chat-client and of every frame of the edge chat protocol (README.md of the
// repository is the contract; these follow it field for field).

// ---- frames from the server ---------------------------------------------------------------

/** A stored message: in a `message` frame, a welcome's history and the history route. */
export interface ChatMessage {
  type: 'message';
  /** Grows strictly within a room, across restarts. */
  id: number;
  nick: string;
  text: string;
  /** Unix time in milliseconds; never goes backwards within a room. */
  at: number;
  /** The sender's ticket identity (`sub`); absent for anonymous senders. */
  uid?: string;
  /** The room-wide sequence number of this message's latest change (post, edit, reaction). */
  seq?: number;
  /** The id of the message this one answers. */
  reply_to?: number;
  /** When its author last edited it (Unix ms); absent if never edited. */
  edited_at?: number;
  /** How many people reacted with each emoji; absent when nobody did. */
  reactions?: Record<string, number>;
  /** Only on the echo to its sender (and in `send()`'s answer): the client's id for it. */
  cid?: string;
  deleted?: never;
}

/** What history, `since` replays and the library's window keep of a deleted message: no `text`. */
export interface DeletedMessage {
  type: 'message';
  id: number;
  nick: string;
  deleted: true;
  /** When the message was posted. */
  at: number;
  uid?: string;
  seq?: number;
  text?: never;
}

/** A message as history holds it: a live one, or the tombstone of a deleted one. */
export type StoredMessage = ChatMessage | DeletedMessage;

/** `member` (default, also every anonymous socket), `moderator` or `readonly`. */
export type Role = 'member' | 'moderator' | 'readonly' | (string & {});

/** Who a socket is, from its welcome. */
export interface You {
  nick: string;
  /** The ticket's `sub`, or null when anonymous. */
  id: string | null;
  role: Role;
}

export interface WelcomeFrame {
  type: 'welcome';
  room: string;
  /** The nick this socket got: the one asked for, or a random one (an `error` frame then follows). */
  nick: string;
  /** Everyone in the room, this socket included. */
  users: string[];
  /**
   * Up to 100 messages (fewer when the server's byte budget cut it), oldest first: the newest, or
   * with `since` the first ones after it. Deleted ones are tombstones.
   */
  history: StoredMessage[];
  you: You;
  /** The room's latest sequence number when the welcome was built (0 for an empty room); the next `after`. */
  seq?: number;
  /**
   * Present (true) when a resumed client may hold messages a moderator's clear removed while it was
   * away: the client drops them (`messages` is emptied) before taking `history`.
   */
  cleared?: boolean;
  /** How long authors may edit their messages, if the server says (else 900 s). */
  edit_window_s?: number;
}

export interface JoinedFrame {
  type: 'joined';
  nick: string;
  at: number;
}

export interface LeftFrame {
  type: 'left';
  nick: string;
  at: number;
}

export interface RenamedFrame {
  type: 'renamed';
  from: string;
  to: string;
  at: number;
}

/** The server's error codes; other strings may come from newer servers. */
export type ErrorCode =
  | 'too_long'
  | 'empty'
  | 'bad_json'
  | 'bad_type'
  | 'unsupported'
  | 'bad_nick'
  | 'nick_taken'
  | 'rate_limited'
  | 'unavailable'
  | 'forbidden'
  | 'ticket_expired'
  | 'not_found'
  | 'slow_mode'
  | 'banned'
  | 'too_late'
  | 'bad_emoji'
  | (string & {});

/** Message `id` was deleted (by its author or a moderator): it is now a tombstone. */
export interface DeletedFrame {
  type: 'deleted';
  id: number;
  /** When it was deleted. */
  at?: number;
  seq?: number;
}

/** Message `id` was edited by its author. */
export interface EditedFrame {
  type: 'edited';
  id: number;
  text: string;
  edited_at: number;
  seq: number;
}

/** The reactions on message `id` changed: the count of each emoji (empty when none is left). */
export interface ReactionsFrame {
  type: 'reactions';
  id: number;
  counts: Record<string, number>;
  seq: number;
}

/** `nick` is typing, until `until` (the server's Unix ms; 6 s after their last `typing`). */
export interface TypingFrame {
  type: 'typing';
  nick: string;
  until: number;
}

export type ModerationAction = 'delete' | 'kick' | 'ban' | 'unban' | 'mute' | 'slow' | 'clear';

/** A moderation action, for the whole room to see. */
export interface ModeratedFrame {
  type: 'moderated';
  action: ModerationAction;
  /** The nick acted on (a delete's: the author); null for `slow` and `clear`. */
  target: string | null;
  /** The moderator's nick, or `admin` for the operator's API. */
  by: string;
  at: number;
}

export interface ErrorFrame {
  type: 'error';
  code: ErrorCode;
  /** A sentence for humans. */
  message: string;
}

export type ServerFrame =
  | WelcomeFrame
  | JoinedFrame
  | LeftFrame
  | StoredMessage
  | RenamedFrame
  | DeletedFrame
  | EditedFrame
  | ReactionsFrame
  | TypingFrame
  | ModeratedFrame
  | ErrorFrame;

/** One text frame from the server: a frame, or with the `edge-chat.batch` subprotocol an array of them, in order. */
export type ServerData = ServerFrame | ServerFrame[];

// ---- frames from the client ---------------------------------------------------------------

export interface ClientMessageFrame {
  type: 'message';
  text: string;
  /** The id of the message this one answers. */
  reply_to?: number;
  /** 1 to 64 of `A-Z a-z 0-9 _ -`, unique per client: a resend with the same one posts nothing. */
  cid?: string;
}

/** An author's own messages: edit (within the edit window), delete; and anyone's reaction toggle. */
export type ClientChangeFrame =
  | { type: 'edit'; id: number; text: string }
  | { type: 'react'; id: number; emoji: string }
  | { type: 'typing' };

export interface ClientNickFrame {
  type: 'nick';
  nick: string;
}

/** A moderator's action (ticket role `moderator`); `duration` and `seconds` are seconds. */
export type ClientModerationFrame =
  | { type: 'delete'; id: number }
  | { type: 'kick'; nick: string }
  | { type: 'ban'; nick: string; /** Without one, for good. */ duration?: number }
  | { type: 'unban'; nick: string }
  | { type: 'mute'; nick: string; duration: number }
  | { type: 'slow'; /** 0 turns slow mode off. */ seconds: number }
  | { type: 'clear' };

/** The text frame `ping` is answered `pong` by the runtime without waking the room. */
export type ClientFrame = ClientMessageFrame | ClientNickFrame | ClientModerationFrame | ClientChangeFrame | 'ping';

// ---- HTTP answers -------------------------------------------------------------------------

/** `GET /chat/ROOM/history?since=ID&limit=N`, `?before=ID&limit=N` and `?limit=N`. */
export interface HistoryResponse {
  room: string;
  messages: StoredMessage[];
}

/** `GET /chat/ROOM/users`. */
export interface UsersResponse {
  room: string;
  users: string[];
  count: number;
}

/** Every refused request: `{"error":{"code":…,"message":…}}`. */
export interface HttpErrorResponse {
  error: { code: string; message: string };
}

// ---- the library --------------------------------------------------------------------------

export type Status = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Why a room closed for good. `error` is the last error code the socket got before, if any. */
export interface CloseReason {
  code: number;
  reason: string;
  error: string | null;
}

/** How the client reaches the room. */
export type Transport = 'websocket' | 'sse';

/** What a WebSocket must offer; the browser's, Node 22's global one and the `ws` package's all do. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ConnectOptions {
  /** Where the chat Worker runs, e.g. `https://chat.example.com` (`ws:`/`wss:` work too). */
  url: string | URL;
  /** 1 to 64 of `A-Z a-z 0-9 _ . -`, not only dots. */
  room: string;
  /** The nick to ask for; without one the server picks a random nick. */
  nick?: string;
  /** A ticket sent as `?ticket=` on every connect and history request. */
  ticket?: string;
  /** Called before every (re)connect for a fresh ticket; wins over `ticket`. */
  getTicket?: () => string | null | undefined | Promise<string | null | undefined>;
  /** The WebSocket class to use where there is no global one (Node 20: `import WebSocket from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /**
   * The EventSource class for the HTTP fallback where there is no global one (browsers have it). Without
   * one, the client never falls back.
   */
  EventSource?: new (url: string) => EventTarget & { close(): void };
  /**
   * WebSocket attempts in a row that never open, while `/health` answers, before the client falls back
   * to the event stream and posts (`transport` becomes `sse`). Default 3.
   */
  fallbackAfter?: number;
  /** Offer the `edge-chat.batch` subprotocol (frames may then arrive as arrays). Default true. */
  batch?: boolean;
  /** How many messages `messages` keeps, the newest. Default 1,000. */
  maxMessages?: number;
  /** History pages one catch-up reads at most before resuming on a new socket. Default 10. */
  catchUpPages?: number;
  /**
   * This client instance's id (`?client=`), 1 to 64 of `A-Z a-z 0-9 _ -`: authorship and resend
   * dedupe go by it. Default: one per tab in sessionStorage, else one per `ChatRoom`.
   */
  clientId?: string;
}

/** A message sent and not yet stored (it shows as "sending…"). */
export interface OutboxEntry {
  /** The client message id the server dedupes resends by. */
  cid: string;
  text: string;
  replyTo: number | null;
  /** When `send()` was called (local ms). */
  queuedAt: number;
}

/** Someone typing: `until` is when the indicator expires (local ms). */
export interface TypingUser {
  nick: string;
  until: number;
}

/** Client-side refusal codes, next to the server's own. */
export type ClientErrorCode = 'not_connected' | 'connection_lost' | 'closed';

export declare class ChatError extends Error {
  constructor(code: ErrorCode | ClientErrorCode, message?: string);
  readonly name: 'ChatError';
  readonly code: ErrorCode | ClientErrorCode;
}

export declare class ChatEvent<T = unknown> extends Event {
  constructor(type: string, detail: T, extra?: object);
  readonly detail: T;
}

export interface StatusDetail {
  status: Status;
  previous: Status;
  /** While waiting to reconnect: when the next attempt starts (ms since the epoch). */
  retryAt: number | null;
  catchingUp: boolean;
  closeReason: CloseReason | null;
}

/** How a message reached the client: a live frame, a welcome's history, or a history page. */
export type MessageSource = 'live' | 'welcome' | 'history';

export interface MessagesDetail {
  /** The messages just taken, in id order, none seen before (tombstones among them). */
  added: readonly StoredMessage[];
  source: MessageSource;
}

/** What a refused request was, for `error` events. */
export type RequestInfo =
  | { kind: 'message'; text: string; cid: string }
  | { kind: 'edit'; id: number; text: string }
  | { kind: 'react'; id: number; emoji: string }
  | { kind: 'delete'; id: number }
  | { kind: 'nick'; nick: string; reclaim?: boolean }
  | { kind: 'join'; nick: string; reconnect: boolean }
  | { kind: 'moderate'; action: ClientModerationFrame['type']; frame: ClientModerationFrame };

export interface ChatRoomEventMap {
  welcome: ChatEvent<WelcomeFrame> & { readonly resumed: boolean };
  joined: ChatEvent<JoinedFrame>;
  left: ChatEvent<LeftFrame>;
  /** Once per message, the first time it is seen, in id order (a tombstone if it was deleted before). */
  message: ChatEvent<StoredMessage> & { readonly source: MessageSource };
  /** A message was deleted; `message` is its tombstone, now in `messages`, or null if the window did not hold it. */
  deleted: ChatEvent<DeletedFrame> & { readonly message: DeletedMessage | null };
  /** Message `id` was edited; `message` is the new version, now in `messages`, or null if the window does not hold it. */
  edited: ChatEvent<EditedFrame> & { readonly message: ChatMessage | null };
  /** The reactions on a message changed; `message` as for `edited`. */
  reactions: ChatEvent<ReactionsFrame> & { readonly message: ChatMessage | null };
  /**
   * A message in `messages` was replaced by a newer version (edited, reacted to, deleted, or
   * brought up to date by a resumed welcome): `detail` is the new one, `previous` the old one.
   */
  updated: ChatEvent<StoredMessage> & { readonly previous: StoredMessage };
  /** Who is typing changed (someone started, stopped, posted, left, or an indicator expired). */
  typing: ChatEvent<readonly TypingUser[]>;
  /** The outbox changed: a message was sent, stored or refused. */
  outbox: ChatEvent<readonly OutboxEntry[]>;
  /** A moderation action; after `clear`, `messages` is already empty. */
  moderated: ChatEvent<ModeratedFrame>;
  /** `mine` when this client was renamed. */
  renamed: ChatEvent<RenamedFrame> & { readonly mine: boolean };
  /** `request` is what the error answers, or null when it answers nothing this client asked. */
  error: ChatEvent<ErrorFrame> & { readonly request: RequestInfo | null };
  /** Every frame as received, also types this version does not know. */
  frame: ChatEvent<ServerFrame | { type: string; [field: string]: unknown }>;
  status: ChatEvent<StatusDetail>;
  users: ChatEvent<readonly string[]>;
  /** The client fell back from WebSockets to the event stream and posts. */
  transport: ChatEvent<Transport>;
  /** Once per batch of new messages (a frame, a welcome, a history page). */
  messages: ChatEvent<MessagesDetail>;
}

export declare class ChatRoom extends EventTarget {
  constructor(options: ConnectOptions);
  readonly room: string;
  readonly status: Status;
  /** `websocket`, or `sse` once it fell back to the event stream and posts (see `fallbackAfter`). */
  readonly transport: Transport;
  readonly closeReason: CloseReason | null;
  readonly retryAt: number | null;
  readonly catchingUp: boolean;
  readonly nick: string | null;
  /** Who this client is, once welcomed. */
  readonly you: Readonly<You> | null;
  readonly users: readonly string[];
  readonly messages: readonly StoredMessage[];
  readonly lastId: number | null;
  /** The highest sequence number seen: the `after` of the next reconnect (null before a server that has them). */
  readonly lastSeq: number | null;
  /** This client instance's id, sent as `?client=`. */
  readonly clientId: string;
  /** Messages sent and not yet stored, oldest first. */
  readonly outbox: readonly OutboxEntry[];
  /** Who is typing, in the order they started. */
  readonly typingUsers: readonly TypingUser[];
  /** How long authors may edit, in ms (the welcome's `edit_window_s`, else 900 s). */
  readonly editWindowMs: number;
  /** Whether this client wrote `message` (its ticket identity, or a message this tab posted). */
  isOwn(message: StoredMessage): boolean;
  /** Whether this client may still edit `message`: its own, not deleted, within the edit window. */
  canEdit(message: StoredMessage, now?: number): boolean;

  /**
   * Resolves with the stored message; rejects with a `ChatError`. Waits in the outbox while not
   * connected, and is resent after a reconnect (the server posts it once, by its `cid`).
   */
  send(text: string, options?: { replyTo?: number }): Promise<ChatMessage>;
  /** Replaces the text of an own message within the edit window; resolves with the `edited` frame. */
  edit(id: number, text: string): Promise<EditedFrame>;
  /** Toggles this client's reaction; resolves with the `reactions` frame (`bad_emoji`, `not_found` reject). */
  react(id: number, emoji: string): Promise<ReactionsFrame>;
  /** Says this client is typing: sends at most every 3 s, only while open; returns whether it sent. */
  typing(): boolean;
  /** Resolves with the new nick once the room announced it; rejects with a `ChatError`. */
  rename(nick: string): Promise<string>;
  /**
   * Deletes a message, leaving a tombstone: an author's own (resolves with the `deleted` frame) or,
   * for a moderator, anyone's (resolves with the `moderated` frame).
   */
  delete(id: number): Promise<ModeratedFrame | DeletedFrame>;
  // Moderators only: each resolves with the `moderated` frame of the action, or rejects with a
  // `ChatError` (`forbidden`, `not_found`, …). They wait while not connected, as `send()` does.
  /** Closes every socket of `nick` with 4000. */
  kick(nick: string): Promise<ModeratedFrame>;
  /** Kicks and refuses `nick` for `duration` seconds, or for good without one. */
  ban(nick: string, options?: { duration?: number }): Promise<ModeratedFrame>;
  unban(nick: string): Promise<ModeratedFrame>;
  /** Keeps `nick` from posting for `duration` seconds. */
  mute(nick: string, options: { duration: number }): Promise<ModeratedFrame>;
  /** One message per person per `seconds` (0: off). */
  slow(seconds: number): Promise<ModeratedFrame>;
  /** Deletes the whole history. */
  clear(): Promise<ModeratedFrame>;
  /** Connects now: while waiting to retry, or after the server closed the room for good. */
  reconnect(): void;
  /** Leaves the room for good. */
  close(): void;

  addEventListener<K extends keyof ChatRoomEventMap>(
    type: K,
    listener: (this: ChatRoom, event: ChatRoomEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof ChatRoomEventMap>(
    type: K,
    listener: (this: ChatRoom, event: ChatRoomEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

export declare function connect(options: ConnectOptions): ChatRoom;
export declare function isValidRoom(name: unknown): name is string;
export declare function isValidNick(nick: unknown): nick is string;
/** 1 to 64 of `A-Z a-z 0-9 _ -`: a valid `clientId` (and `cid`). */
export declare function isValidClientId(id: unknown): id is string;
export declare const BATCH_PROTOCOL: 'edge-chat.batch';
export declare const TERMINAL_CLOSE_CODES: readonly [1008, 4000, 4401, 4403, 4429];
