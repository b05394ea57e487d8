// The chat UI, written once and used twice: the full page (index.html via page.js) and the
// embeddable widget (embed.js). `mountChat(element, options)` renders one room into a shadow
// root on `element`, so that page styles and chat styles stay apart. The protocol (connecting,
// reconnecting, catching up, deduplicating, matching answers to sends) is the client library in
// ./lib/; this file only renders and takes input.
//
// Every string that comes from a user (nicks, message text, room names) reaches the DOM as a
// text node or a plain attribute value, never as markup: nothing here uses innerHTML. Nicks and
// texts are bidi-isolated (dir="auto", unicode-bidi: isolate), and own messages are told apart
// by a class and a label no nick can spell, never by a nick-like word.

import { connect as connectRoom, isValidNick, isValidRoom } from './lib/index.js';

export { isValidNick, isValidRoom };

const MAX_TEXT_CHARS = 2_000;
const COUNTER_FROM_CHARS = 1_800;
const GROUP_WINDOW_MS = 5 * 60_000;
// Entries in the log (messages, system lines, day separators), also while the reader is scrolled up.
const MAX_LOG_ENTRIES = 1_000;
const NEAR_BOTTOM_PX = 48;
const NICK_STORAGE_KEY = 'edge-chat:nick';
// Nicks are letters, digits, '_', '-' and '.': no nick can spell this label (nor the users list's "(you)").
const OWN_LABEL = 'sent by you';

export const DEFAULT_ROOM = 'lobby';

const ROOM_RULE = "Room names are 1 to 64 letters, digits, '_', '.' or '-'.";
const NICK_RULE = "Nicknames are 1 to 32 letters, digits, '_', '-' or '.'.";
const NICK_CODES = new Set(['nick_taken', 'bad_nick']);
const ROLE_LABELS = { moderator: 'moderator', readonly: 'read-only' };
const MUTE_CHOICES = [['10 min', 600], ['1 h', 3_600], ['1 day', 86_400]];
const BAN_CHOICES = [...MUTE_CHOICES, ['for good', undefined]];
// Why the server closed for good, when it gave no reason of its own (close codes the library treats as terminal).
const CLOSE_SENTENCES = {
  1008: 'The server closed the chat after too many messages in a row.',
  4000: 'You were removed from this room by a moderator.',
  4401: 'Your ticket is missing, invalid or expired. Get a new one to come back.',
  4403: 'You may not enter this room.',
  4429: 'Too many connections from your network. Close some chats and reload.',
};
// Refusals that say nothing about the message itself: the status line tells about the connection.
const CONNECTION_CODES = new Set(['connection_lost', 'closed', 'not_connected']);
// The reaction picker: common emoji, each with the name a screen reader says.
const REACTIONS = [['👍', 'thumbs up'], ['❤️', 'heart'], ['😂', 'laughing'], ['🎉', 'party'], ['😮', 'surprised'], ['😢', 'sad']];
// How much of a message a reply's quote shows.
const QUOTE_CHARS = 80;

/**
 * Renders the chat of `room` into `element` and connects it.
 * @param {Element} element the host; it gets an open shadow root.
 * @param {object} [options]
 * @param {string} [options.room] room name, `lobby` by default.
 * @param {string} [options.origin] where the chat Worker runs; by default the origin this
 *   module was loaded from.
 * @param {string} [options.nick] the nick to ask for; by default the one the user last chose.
 * @param {string} [options.ticket] a ticket from the host application (the nick then comes from it).
 * @param {() => string | Promise<string>} [options.getTicket] called before every (re)connect for a
 *   fresh ticket; wins over `ticket`.
 * @param {boolean} [options.switchRooms] offer a control to move to another room.
 * @param {(room: string) => void} [options.onRoomChange] called when the user switched rooms.
 */
export function mountChat(element, options = {}) {
  const room = options.room ?? DEFAULT_ROOM;
  if (!isValidRoom(room)) throw new TypeError(`edge chat: ${JSON.stringify(room)} is not a room name. ${ROOM_RULE}`);
  const chat = new Chat(element, { ...options, room });
  chat.connect();
  return {
    get room() {
      return chat.room;
    },
    get nick() {
      return chat.nick;
    },
    switchRoom: (name) => chat.switchRoom(name),
    destroy: () => chat.destroy(),
  };
}

class Chat {
  constructor(host, { room, origin, nick, ticket, getTicket, switchRooms = false, onRoomChange }) {
    this.origin = new URL(origin ?? import.meta.url).origin;
    this.ticket = ticket || undefined;
    this.getTicket = typeof getTicket === 'function' ? getTicket : undefined;
    this.room = room;
    this.wantedNick = isValidNick(nick) ? nick : storedNick();
    this.onRoomChange = onRoomChange;
    this.conn = null;
    this.countdown = null;
    this.batch = null;
    this.batchTimer = null;
    this.status = 'connecting';
    this.resetRoomState();
    this.build(host, switchRooms);
    this.renderRoom();
  }

  /** The nick the server gave us in this room. */
  get nick() {
    return this.conn?.nick ?? null;
  }

  /** Everything that belongs to one visit of one room. */
  resetRoomState() {
    this.users = [];
    this.welcomed = false;
    this.resumed = false;
    this.outage = false;
    this.lastEntry = null;
    this.unseen = 0;
    this.role = 'member';
    this.ticketed = false;
    this.moderating = null;
    this.lastError = null;
    // Per-message UI state: the message being edited (with its draft), whose picker is open, what a reply answers.
    this.editing = null;
    this.picking = null;
    this.replyTo = null;
    // Newer versions of messages queued for rendering but not yet on screen.
    this.pendingVersions = new Map();
  }

  // ---- connection ---------------------------------------------------------------------

  connect() {
    const conn = connectRoom({
      url: this.origin,
      room: this.room,
      nick: this.wantedNick ?? undefined,
      ticket: this.ticket,
      getTicket: this.getTicket,
    });
    this.conn = conn;
    // A room left behind (switched away from, destroyed) no longer reaches the screen.
    const on = (type, handler) => conn.addEventListener(type, (event) => this.conn === conn && handler(event));
    on('status', () => this.onStatus());
    on('transport', () => this.onStatus());
    on('welcome', (event) => this.onWelcome(event));
    on('users', ({ detail }) => {
      this.users = [...detail];
      this.renderUsers();
    });
    on('messages', ({ detail }) => this.addMessages(detail.added, detail.source === 'live'));
    on('joined', ({ detail }) => this.onJoined(detail));
    on('left', ({ detail }) => this.onLeft(detail));
    on('renamed', (event) => this.onRenamed(event));
    on('updated', ({ detail }) => this.onUpdated(detail));
    on('outbox', ({ detail }) => this.renderOutbox(detail));
    on('typing', ({ detail }) => this.renderTyping(detail));
    on('moderated', ({ detail }) => this.onModerated(detail));
    on('error', (event) => this.onServerError(event));
    this.onStatus();
  }

  /** Leaves the room without reconnecting. */
  disconnect() {
    const conn = this.conn;
    this.conn = null;
    conn?.close();
  }

  onStatus() {
    const conn = this.conn;
    // A catch-up after a resumed welcome is part of coming back, not another loss.
    if (conn.status === 'reconnecting' && this.welcomed && !this.outage && !conn.catchingUp) {
      this.outage = true;
      this.system(['Connection lost. Reconnecting…'], Date.now(), 'ec-conn');
    }
    if (conn.status === 'open' && this.outage) {
      this.outage = false;
      this.system(['Reconnected.'], Date.now(), 'ec-conn');
    }
    if (conn.status === 'closed' && this.status !== 'closed') {
      // Closed for good (kicked, banned, refused): the library does not retry, and neither does the page.
      const { code, reason, error } = conn.closeReason;
      // The error frame that came just before the close, if the close itself gave no reason.
      const told = error && this.lastError?.code === error ? this.lastError.message : '';
      const why = reason || told || CLOSE_SENTENCES[code] || `The server closed the chat (${code}).`;
      this.closedNote.textContent = why;
      this.closedNote.hidden = false;
      this.showSendError('');
      this.system([why], Date.now(), 'ec-conn');
      // Out of the room: who is in it is no longer known here.
      this.users = [];
      this.renderUsers();
      this.renderRole();
    }
    this.setStatus(viewState(conn, this.welcomed));
  }

  send() {
    const text = this.input.value.trim();
    if (!text) {
      this.input.value = '';
      this.autosize();
      return;
    }
    const length = [...text].length;
    if (length > MAX_TEXT_CHARS) {
      this.showSendError(`Messages can be at most ${MAX_TEXT_CHARS} characters; this one has ${length}.`);
      return;
    }
    if (this.status === 'closed') return;
    // While offline the message waits in the library's outbox (shown as "sending…") and goes out,
    // once, when the chat is back.
    const conn = this.conn;
    const replyTo = this.replyTo?.id;
    conn.send(text, replyTo === undefined ? {} : { replyTo }).then(
      // Known as ours now (its echo carried our cid): show its Edit and Delete if it is on screen already.
      (stored) => this.conn === conn && this.rerender(stored.id),
      (error) => this.conn === conn && this.onSendRefused(text, error),
    );
    this.input.value = '';
    this.autosize();
    this.showSendError('');
    this.cancelReply();
  }

  /** The server did not store the message: give it back to the writer, with the reason. */
  onSendRefused(text, error) {
    if (error.code === 'closed') return;
    if (!this.input.value.trim()) {
      this.input.value = text;
      this.autosize();
    }
    this.showSendError(error.message);
  }

  switchRoom(room) {
    if (!isValidRoom(room)) throw new TypeError(`edge chat: ${JSON.stringify(room)} is not a room name. ${ROOM_RULE}`);
    if (room === this.room) return;
    this.disconnect();
    this.dropBatch();
    this.room = room;
    this.resetRoomState();
    this.list.replaceChildren();
    this.outboxList.replaceChildren();
    this.typingLine.replaceChildren();
    this.cancelReply();
    this.hideJump();
    this.showSendError('');
    this.showNickNote('');
    this.closedNote.hidden = true;
    this.renderRoom();
    this.renderUsers();
    this.connect();
    this.renderRole();
  }

  destroy() {
    this.disconnect();
    this.dropBatch();
    clearInterval(this.countdown);
    this.shadow.replaceChildren();
  }

  // ---- what the room tells ------------------------------------------------------------

  onWelcome({ detail, resumed }) {
    if (detail.cleared === true) {
      this.list.replaceChildren();
      this.lastEntry = null;
    }
    this.welcomed = true;
    this.resumed = resumed;
    this.role = this.conn.you?.role ?? 'member';
    this.ticketed = this.conn.you?.id != null;
    this.renderNick();
    this.renderRole();
    this.renderUsers();
  }

  onJoined({ nick, at }) {
    this.system([bold(nick), ' joined'], at);
    this.announce(`${nick} joined`);
  }

  onLeft({ nick, at }) {
    this.system([bold(nick), ' left'], at);
    this.announce(`${nick} left`);
  }

  onRenamed({ detail: { from, to, at }, mine }) {
    if (mine) {
      this.showNickNote('');
      this.renderNick();
      this.system(['You are now ', bold(to)], at);
    } else {
      this.system([bold(from), ' is now ', bold(to)], at);
      this.announce(`${from} is now ${to}`);
    }
  }

  /** A message changed (edited, reacted to, deleted): its entry, and the quotes of replies to it, show the new version. */
  onUpdated(message) {
    const id = Number(message.id);
    if (!this.rerender(id, message)) this.pendingVersions.set(id, message);
    if (message.deleted && this.editing?.id === id) this.editing = null;
    if (message.deleted && this.replyTo?.id === id) this.cancelReply();
    for (const reply of this.list.querySelectorAll(`.ec-msg[data-reply-to="${id}"]`)) this.rerender(Number(reply.dataset.id));
  }

  /** Renders message `id` again (its newest version, or `message`); false if it is not on screen. */
  rerender(id, message) {
    const entry = this.list.querySelector(`.ec-msg[data-id="${id}"]`);
    if (!entry) return false;
    const focused = entry.contains(this.shadow.activeElement) ? this.shadow.activeElement.dataset.key : undefined;
    const fresh = this.messageEntry({ ...entry.state, message: message ?? entry.state.message, live: false });
    entry.replaceWith(fresh);
    // Keep the keyboard where it was: on the same control of the new entry.
    if (focused) fresh.querySelector(`[data-key="${focused}"]`)?.focus();
    return true;
  }

  onModerated({ action, target, by, at }) {
    const who = target == null ? [] : [bold(target)];
    const what = {
      delete: [' deleted a message by ', ...who],
      kick: [' removed ', ...who],
      ban: [' banned ', ...who],
      unban: [' lifted the ban on ', ...who],
      mute: [' muted ', ...who],
      slow: [' changed slow mode'],
      clear: [' cleared the history'],
    }[action] ?? [` moderated (${action}) `, ...who];
    if (action === 'clear') {
      this.list.replaceChildren();
      this.lastEntry = null;
    }
    this.system([bold(by), ...what], at, 'ec-moderated');
    this.announce(`${by}${what.map((part) => (typeof part === 'string' ? part : part.textContent)).join('')}`);
  }

  /** Runs a moderator's action; a refusal (not_found, forbidden…) shows under the message box. */
  moderate(act) {
    if (this.conn && this.status === 'online') {
      this.moderating = null;
      this.renderUsers();
    }
    this.whenOnline(act);
  }

  /** Errors that answer a send or a rename reach their promise; the rest are shown here. */
  onServerError({ detail: { code, message }, request }) {
    const text = typeof message === 'string' && message ? message : `The server refused that (${code}).`;
    this.lastError = { code, message: text };
    if (request?.kind === 'join') {
      // On a reconnect the library takes the nick back once the old socket has left.
      if (!request.reconnect) this.showNickNote(`Could not use “${request.nick}”: ${text} You are ${this.nick} for now.`);
      return;
    }
    if (request) return;
    if (NICK_CODES.has(code)) this.showNickNote(text);
    else this.showSendError(text);
  }

  // ---- rendering ----------------------------------------------------------------------

  /** Shows new messages (the library hands each one over once, in id order). */
  addMessages(messages, live) {
    const ownLive = live && messages.some((m) => m.nick === this.nick);
    // Messages caught up on after a reconnect are as new to the reader as live ones.
    const unseen = live || this.resumed ? messages.length : 0;
    // Whose a message is, is decided now: a rename may come before the batch is rendered.
    const own = messages.map((m) => m.nick === this.nick);
    messages.forEach((m, i) => live && !own[i] && this.announce(`${m.nick}: ${m.text}`));
    this.appendAround(() => messages.forEach((m, i) => this.appendMessage(m, own[i], live)), { force: ownLive, count: unseen });
  }

  appendMessage(message, own, live) {
    // It may have changed since it arrived (an edit in the same burst).
    message = this.pendingVersions.get(message.id) ?? message;
    this.pendingVersions.delete(message.id);
    const nick = String(message.nick);
    const previous = this.lastEntry;
    const continues =
      previous?.kind === 'message' && previous.nick === nick && message.at - previous.at < GROUP_WINDOW_MS &&
      previous.day === dayKey(message.at);
    const entry = this.messageEntry({ message, own, continues, live });
    this.appendEntry(entry, message.at, { kind: 'message', nick });
  }

  /**
   * One message's entry: the quote of what it answers, author, time, an "edited" marker, its text
   * (or its editor), reactions, and its actions (Reply, React, and on own messages Edit and
   * Delete). A deleted one (a tombstone) keeps its author and time and says so. A moderator's
   * Delete button is in every other live entry, shown by the stylesheet only to moderators.
   */
  messageEntry(state) {
    const { message, own, continues, live } = state;
    const { id, text, at, deleted } = message;
    const nick = String(message.nick);
    const mine = this.conn?.isOwn(message) ?? false;
    const classes = ['ec-msg', own && 'ec-own', continues && 'ec-cont', live && 'ec-new', deleted && 'ec-deleted'];
    const editing = !deleted && this.editing?.id === id;
    const edited = !deleted && Number.isFinite(message.edited_at);
    const entry = h('li', {
      class: classes.filter(Boolean).join(' '), 'data-id': String(id), tabindex: '-1',
      'data-reply-to': Number.isSafeInteger(message.reply_to) ? String(message.reply_to) : null,
    },
    avatar(nick),
    h('div', { class: 'ec-bubble' },
      !deleted && Number.isSafeInteger(message.reply_to) ? this.quote(message.reply_to) : '',
      h('p', { class: 'ec-meta' },
        h('span', { class: 'ec-author', dir: 'auto' }, nick),
        own ? h('span', { class: 'ec-own-label ec-sr' }, OWN_LABEL) : '',
        ' ', timeElement(at),
        edited ? h('span', { class: 'ec-edited', title: `edited ${fullFormat.format(new Date(message.edited_at))}` }, '(edited)') : ''),
      deleted
        ? h('p', { class: 'ec-text ec-tombstone' }, 'message deleted')
        : editing
          ? this.editForm(message)
          : h('p', { class: 'ec-text', dir: 'auto' }, String(text)),
      deleted ? '' : this.reactionButtons(message),
      deleted || editing ? '' : this.messageActions(message, nick, mine),
      !deleted && this.picking === id ? this.picker(id) : ''));
    entry.style.setProperty('--ec-hue', String(hue(nick)));
    entry.state = state;
    return entry;
  }

  /** Reply, React, and on own messages Edit (within the edit window) and Delete; a moderator's Delete on others'. */
  messageActions(message, nick, mine) {
    const { id } = message;
    const action = (key, text, label, onclick, { class: extraClass = '', ...extra } = {}) =>
      h('button', { type: 'button', class: `ec-act ${extraClass}`.trim(), 'data-key': key, 'aria-label': label, ...extra, onclick }, text);
    return h('div', { class: 'ec-actions' },
      action('reply', 'Reply', `Reply to ${nick}`, () => this.startReply(message)),
      action('react', 'React', `React to the message by ${nick}`, () => this.togglePicker(id), {
        'aria-expanded': String(this.picking === id),
      }),
      mine && this.conn.canEdit(message) ? action('edit', 'Edit', 'Edit your message', () => this.startEdit(message)) : '',
      mine ? action('delete', 'Delete', 'Delete your message', () => this.deleteOwn(id), { class: 'ec-own-delete' }) : '',
      mine ? '' : h('button', {
        type: 'button', class: 'ec-mod ec-delete', 'data-key': 'mod-delete', 'aria-label': `Delete message by ${nick}`,
        onclick: () => this.moderate((conn) => conn.delete(id)),
      }, 'Delete'));
  }

  /** The quote a reply starts with: who and what it answers; a click goes to the original. */
  quote(replyTo) {
    const original = this.conn?.messages.find((message) => message.id === replyTo);
    const who = original ? String(original.nick) : '';
    const what = !original ? 'an earlier message' : original.deleted ? 'message deleted' : preview(original.text);
    return h('button', {
      type: 'button', class: 'ec-quote', 'data-key': 'quote',
      'aria-label': `In reply to ${who ? `${who}: ` : ''}${what}. Show the original`,
      onclick: () => this.showOriginal(replyTo),
    },
    who ? h('span', { class: 'ec-quote-nick', dir: 'auto' }, who) : '',
    h('span', { class: 'ec-quote-text', dir: 'auto' }, what));
  }

  /** Scrolls to the message a reply answers, and marks it for a moment. */
  showOriginal(id) {
    const entry = this.list.querySelector(`.ec-msg[data-id="${id}"]`);
    if (!entry) {
      this.announce('The original message is no longer shown here.');
      return;
    }
    entry.scrollIntoView({ block: 'center' });
    entry.focus({ preventScroll: true });
    entry.classList.remove('ec-flash');
    // Restart the highlight's animation.
    void entry.offsetWidth;
    entry.classList.add('ec-flash');
  }

  reactionButtons(message) {
    const counts = Object.entries(message.reactions ?? {});
    if (!counts.length) return '';
    return h('div', { class: 'ec-reactions', role: 'group', 'aria-label': 'Reactions' },
      ...counts.map(([emoji, count]) => h('button', {
        type: 'button', class: 'ec-reaction', 'data-key': `reaction ${emoji}`,
        'aria-label': `${emoji} ${count}: add or remove yours`,
        onclick: () => this.react(message.id, emoji),
      }, h('span', { 'aria-hidden': 'true' }, emoji), ' ', String(count))));
  }

  picker(id) {
    return h('div', {
      class: 'ec-picker', role: 'group', 'aria-label': 'Pick a reaction',
      onkeydown: (event) => {
        if (event.key !== 'Escape') return;
        event.preventDefault();
        this.togglePicker(id);
      },
    },
    ...REACTIONS.map(([emoji, name]) => h('button', {
      type: 'button', class: 'ec-pick', 'data-key': `pick ${emoji}`, 'aria-label': `React with ${name}`,
      onclick: () => {
        this.picking = null;
        this.rerender(id);
        this.react(id, emoji);
      },
    }, emoji)));
  }

  togglePicker(id) {
    const previous = this.picking;
    this.picking = previous === id ? null : id;
    if (previous !== null && previous !== id) this.rerender(previous);
    this.rerender(id);
    const entry = this.list.querySelector(`.ec-msg[data-id="${id}"]`);
    entry?.querySelector(this.picking === id ? '.ec-pick' : '[data-key="react"]')?.focus();
  }

  react(id, emoji) {
    this.whenOnline((conn) => conn.react(id, emoji));
  }

  deleteOwn(id) {
    this.whenOnline((conn) => conn.delete(id));
  }

  /** Runs a change to a message now; refusals (too_late, not_found…) show under the message box. */
  whenOnline(act) {
    const conn = this.conn;
    if (!conn || this.status !== 'online') {
      this.showSendError('Not connected right now: try again in a moment.', 'offline');
      return;
    }
    act(conn).catch((error) => this.conn === conn && !CONNECTION_CODES.has(error.code) && this.showSendError(error.message));
  }

  startEdit(message) {
    this.editing = { id: message.id, draft: String(message.text) };
    this.picking = null;
    this.rerender(message.id);
    const input = this.list.querySelector(`.ec-msg[data-id="${message.id}"] .ec-edit-input`);
    input?.focus();
    input?.setSelectionRange(input.value.length, input.value.length);
  }

  /** The editor that stands in for an own message's text. */
  editForm(message) {
    const { id } = message;
    const inputId = `ec-edit-${id}`;
    const input = h('textarea', {
      id: inputId, class: 'ec-edit-input', rows: '2', 'data-key': 'edit-input', dir: 'auto',
      oninput: () => {
        this.editing.draft = input.value;
      },
      onkeydown: (event) => {
        if (event.key === 'Escape') {
          event.preventDefault();
          this.cancelEdit(id);
        } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
          event.preventDefault();
          this.saveEdit(id);
        }
      },
    });
    input.value = this.editing.draft;
    return h('form', {
      class: 'ec-edit-form', novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        this.saveEdit(id);
      },
    },
    h('label', { for: inputId, class: 'ec-sr' }, 'Edit your message'),
    input,
    h('div', { class: 'ec-edit-buttons' },
      h('button', { type: 'submit', class: 'ec-btn', 'data-key': 'edit-save' }, 'Save'),
      h('button', { type: 'button', class: 'ec-btn ec-btn-quiet', 'data-key': 'edit-cancel', onclick: () => this.cancelEdit(id) }, 'Cancel')));
  }

  saveEdit(id) {
    const text = this.editing?.draft.trim() ?? '';
    const current = this.conn?.messages.find((message) => message.id === id);
    if (!text || !current || current.deleted) return this.cancelEdit(id);
    if (text === current.text) return this.cancelEdit(id);
    this.cancelEdit(id);
    this.whenOnline((conn) => conn.edit(id, text));
  }

  cancelEdit(id) {
    this.editing = null;
    this.rerender(id);
    this.list.querySelector(`.ec-msg[data-id="${id}"] [data-key="edit"]`)?.focus();
  }

  startReply(message) {
    this.replyTo = { id: message.id, nick: String(message.nick) };
    this.replyText.replaceChildren('Replying to ', bold(String(message.nick)), ': ',
      h('span', { dir: 'auto' }, preview(message.text ?? '')));
    this.replyBar.hidden = false;
    this.input.focus();
  }

  cancelReply() {
    this.replyTo = null;
    this.replyBar.hidden = true;
    this.replyText.replaceChildren();
  }

  /** Messages sent and not yet stored, below the log, each marked "sending…". */
  renderOutbox(entries) {
    const stick = this.nearBottom();
    this.outboxList.replaceChildren(...entries.map((entry) => h('li', { class: 'ec-pending ec-own', 'data-cid': entry.cid },
      h('div', { class: 'ec-bubble' },
        entry.replyTo === null ? '' : this.quote(entry.replyTo),
        h('p', { class: 'ec-meta' }, h('span', { class: 'ec-sending' }, 'sending…')),
        h('p', { class: 'ec-text', dir: 'auto' }, entry.text)))));
    if (stick) this.scrollToBottom();
  }

  /** "Ann is typing…", "Ann and Bob are typing…", "Several people are typing…". */
  renderTyping(typists) {
    const nicks = typists.map((typist) => typist.nick).filter((nick) => nick !== this.nick);
    const parts = nicks.length === 0 ? []
      : nicks.length === 1 ? [bold(nicks[0]), ' is typing…']
        : nicks.length === 2 ? [bold(nicks[0]), ' and ', bold(nicks[1]), ' are typing…']
          : ['Several people are typing…'];
    this.typingLine.replaceChildren(...parts);
  }

  /** A quiet line for joins, leaves, renames and the connection. */
  system(parts, at, extraClass = '') {
    const entry = h('li', { class: `ec-system ${extraClass}`.trim() }, h('span', {}, ...parts), ' ', timeElement(at));
    this.appendAround(() => this.appendEntry(entry, at, { kind: 'system' }), { count: 0 });
  }

  appendEntry(entry, at, { kind, nick = null }) {
    const day = dayKey(at);
    if (this.lastEntry?.day !== day) this.list.append(h('li', { class: 'ec-day' }, h('span', {}, dayLabel(at))));
    this.list.append(entry);
    this.lastEntry = { kind, nick, at, day };
  }

  /**
   * Queues `append`; the queue is rendered after the frames already waiting, so that a burst of
   * messages costs one layout rather than one per message. After it, the log stays at the newest
   * entry unless the reader had scrolled up (`force`: even then); `count` new messages are
   * announced by the jump button.
   */
  appendAround(append, { force = false, count = 0 }) {
    const batch = (this.batch ??= { appends: [], force: false, count: 0 });
    batch.appends.push(append);
    batch.force ||= force;
    batch.count += count;
    this.batchTimer ??= setTimeout(() => this.renderBatch(), 0);
  }

  renderBatch() {
    const { appends, force, count } = this.batch;
    this.dropBatch();
    const stick = force || this.nearBottom();
    for (const append of appends) append();
    this.trim(!stick);
    if (stick) {
      this.scrollToBottom();
    } else if (count) {
      this.unseen += count;
      this.jump.textContent = `${this.unseen} new message${this.unseen === 1 ? '' : 's'} ↓`;
      this.jump.hidden = false;
    }
  }

  dropBatch() {
    clearTimeout(this.batchTimer);
    this.batch = this.batchTimer = null;
  }

  /** Keeps the log at MAX_LOG_ENTRIES, oldest first out; a reader scrolled up keeps their place. */
  trim(keepPlace) {
    const excess = this.list.childElementCount - MAX_LOG_ENTRIES;
    if (excess <= 0) return;
    const anchor = keepPlace ? this.list.children[excess] : null;
    const top = anchor?.getBoundingClientRect().top;
    for (let i = 0; i < excess; i++) this.list.firstElementChild.remove();
    if (anchor) this.log.scrollTop += anchor.getBoundingClientRect().top - top;
  }

  nearBottom() {
    const log = this.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight <= NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.log.scrollTop = this.log.scrollHeight;
    this.hideJump();
  }

  hideJump() {
    this.unseen = 0;
    this.jump.hidden = true;
  }

  renderRoom() {
    this.roomName.textContent = this.room;
    this.inputLabel.textContent = `Message #${this.room}`;
    this.input.placeholder = `Message #${this.room}`;
  }

  /** The role badge, and what the role allows: read-only users and closed chats cannot write. */
  renderRole() {
    this.root.dataset.role = this.role;
    this.roleBadge.textContent = ROLE_LABELS[this.role] ?? '';
    this.roleBadge.hidden = !ROLE_LABELS[this.role];
    // A ticket's nick comes from the ticket: the server refuses renames.
    this.nickButton.hidden = this.ticketed;
    const closed = this.conn?.status === 'closed';
    const readonly = this.role === 'readonly';
    this.input.disabled = this.sendButton.disabled = closed || readonly;
    this.readonlyNote.hidden = closed || !readonly;
  }

  renderNick() {
    this.myNick.textContent = this.nick ?? '…';
    this.myAvatar.textContent = initial(this.nick ?? '?');
    this.myAvatar.style.setProperty('--ec-hue', String(hue(this.nick ?? '')));
  }

  renderUsers() {
    const others = this.users
      .filter((user) => user !== this.nick)
      .sort((a, b) => a.localeCompare(b, undefined, { sensitivity: 'base' }));
    const everyone = this.users.includes(this.nick) ? [this.nick, ...others] : others;
    this.userList.replaceChildren(
      ...everyone.map((user) => {
        const me = user === this.nick;
        const item = h('li', { class: me ? 'ec-user ec-user-me' : 'ec-user' },
          avatar(user),
          h('span', { class: 'ec-user-name', dir: 'auto' }, user),
          me ? h('span', { class: 'ec-you' }, '(you)') : '');
        item.style.setProperty('--ec-hue', String(hue(user)));
        if (!me && this.role === 'moderator') item.append(...this.moderationControls(user));
        return item;
      }),
    );
    for (const count of this.counts) count.textContent = String(everyone.length);
  }

  /** A moderator's controls for `user`: a toggle, and Kick, Mute and Ban (with a duration) behind it. */
  moderationControls(user) {
    const open = this.moderating === user;
    const toggle = h('button', {
      type: 'button', class: 'ec-mod ec-mod-toggle', 'aria-expanded': String(open), 'aria-label': `Moderate ${user}`,
      onclick: () => {
        this.moderating = open ? null : user;
        this.renderUsers();
        // The list was rebuilt: keep the focus on this user's toggle.
        [...this.userList.querySelectorAll('.ec-mod-toggle')]
          .find((button) => button.getAttribute('aria-label') === `Moderate ${user}`)?.focus();
      },
    }, '⋯');
    if (!open) return [toggle];
    const act = (text, label, run) => h('button', {
      type: 'button', class: 'ec-mod-action', 'aria-label': label, onclick: () => this.moderate(run),
    }, text);
    const row = (name, choices, run) => h('div', { class: 'ec-mod-row' },
      h('span', { class: 'ec-mod-label', 'aria-hidden': 'true' }, name),
      ...choices.map(([text, duration]) =>
        act(text, `${name} ${user} ${duration ? `for ${text}` : text}`, (conn) => run(conn, duration))));
    return [toggle, h('div', { class: 'ec-mod-actions' },
      h('div', { class: 'ec-mod-row' }, act('Kick', `Kick ${user}`, (conn) => conn.kick(user))),
      row('Mute', MUTE_CHOICES, (conn, duration) => conn.mute(user, { duration })),
      row('Ban', BAN_CHOICES, (conn, duration) => conn.ban(user, { duration })))];
  }

  setStatus(state) {
    this.status = state;
    this.root.dataset.status = state;
    clearInterval(this.countdown);
    this.statusDetail.textContent = '';
    const offline = navigator.onLine === false;
    this.statusText.textContent = {
      connecting: 'Connecting…',
      online: 'Connected',
      reconnecting: 'Reconnecting…',
      'catching-up': 'Catching up…',
      waiting: offline ? 'Offline' : 'Disconnected',
      closed: 'Disconnected',
    }[state];
    // A close for good is not retried: the closed note says why.
    this.retryButton.hidden = state !== 'waiting';
    if (state === 'online' && this.sendError.dataset.kind === 'offline') this.showSendError('');
    // The library fell back to an event stream and posts: say so, since it costs the server more.
    if (state === 'online' && this.conn?.transport === 'sse') {
      this.statusText.textContent = 'Connected over HTTP';
      this.statusDetail.textContent = ' · WebSockets are blocked on this network';
    }
    if (state === 'waiting') {
      const tick = () => {
        const seconds = Math.max(1, Math.ceil((this.conn.retryAt - Date.now()) / 1000));
        this.statusDetail.textContent = ` · retrying in ${seconds} s`;
      };
      tick();
      this.countdown = setInterval(tick, 1000);
    }
  }

  announce(text) {
    this.announcer.append(h('p', {}, text));
    while (this.announcer.childElementCount > 5) this.announcer.firstElementChild.remove();
  }

  showSendError(text, kind = 'server') {
    this.sendError.textContent = text;
    this.sendError.dataset.kind = kind;
  }

  showNickError(text) {
    this.nickError.textContent = text;
  }

  showNickNote(text) {
    this.nickNote.textContent = text;
  }

  setNickBusy(busy) {
    this.nickSave.disabled = busy;
    this.nickSave.textContent = busy ? 'Saving…' : 'Save';
  }

  autosize() {
    this.input.style.height = 'auto';
    this.input.style.height = `${this.input.scrollHeight + 2}px`;
    const length = [...this.input.value].length;
    this.counter.textContent = length >= COUNTER_FROM_CHARS ? `${length} / ${MAX_TEXT_CHARS}` : '';
    this.counter.classList.toggle('ec-over', length > MAX_TEXT_CHARS);
  }

  // ---- forms --------------------------------------------------------------------------

  openNickForm() {
    this.nickInput.value = this.nick ?? '';
    this.showNickError('');
    this.showNickNote('');
    this.toggleForm(this.nickForm, this.nickButton, true);
    this.nickInput.select();
  }

  closeNickForm() {
    this.showNickError('');
    this.setNickBusy(false);
    this.toggleForm(this.nickForm, this.nickButton, false);
  }

  submitNick() {
    const nick = this.nickInput.value.trim();
    if (!isValidNick(nick)) return this.showNickError(NICK_RULE);
    if (nick === this.nick) return this.closeNickForm();
    if (this.status !== 'online') return this.showNickError('Not connected right now: try again in a moment.');
    this.showNickError('');
    this.setNickBusy(true);
    const conn = this.conn;
    conn.rename(nick).then(
      (renamed) => {
        if (this.conn !== conn) return;
        storeNick(renamed);
        this.wantedNick = renamed;
        this.closeNickForm();
      },
      (error) => {
        if (this.conn !== conn) return;
        this.setNickBusy(false);
        this.showNickError(CONNECTION_CODES.has(error.code) ? 'Not connected right now: try again in a moment.' : error.message);
      },
    );
  }

  openRoomForm() {
    this.roomInput.value = '';
    this.roomError.textContent = '';
    this.toggleForm(this.roomForm, this.roomButton, true);
    this.roomInput.focus();
  }

  closeRoomForm() {
    this.roomError.textContent = '';
    this.toggleForm(this.roomForm, this.roomButton, false);
  }

  submitRoom() {
    const room = this.roomInput.value.trim().replace(/^#/, '');
    if (!isValidRoom(room)) {
      this.roomError.textContent = ROOM_RULE;
      return;
    }
    this.closeRoomForm();
    if (room !== this.room) {
      this.switchRoom(room);
      this.onRoomChange?.(room);
    }
    this.input.focus();
  }

  toggleForm(form, button, open) {
    form.hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    if (!open && form.contains(this.shadow.activeElement)) button.focus();
  }

  togglePeople(open = this.root.dataset.people !== 'open') {
    this.root.dataset.people = open ? 'open' : 'closed';
    this.peopleToggle.setAttribute('aria-expanded', String(open));
  }

  // ---- building the DOM ---------------------------------------------------------------

  build(host, switchRooms) {
    this.shadow = host.shadowRoot ?? host.attachShadow({ mode: 'open' });
    const sheet = h('link', { rel: 'stylesheet', href: new URL('chat.css', import.meta.url).href });
    this.root = h('div', { class: 'ec', hidden: true, 'data-people': 'closed' });
    // Shown once styled, so nobody sees a flash of unstyled chat.
    const reveal = () => {
      this.root.hidden = false;
      this.scrollToBottom();
    };
    sheet.addEventListener('load', reveal);
    sheet.addEventListener('error', reveal);

    const onEscape = (close) => (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        close();
      }
    };
    const submit = (action) => (event) => {
      event.preventDefault();
      action();
    };

    // Header: room, room switcher, connection status, people toggle (narrow layouts).
    this.roomName = h('span', { class: 'ec-room-name' });
    const title = h('div', { class: 'ec-title' },
      h('h2', { class: 'ec-room' }, h('span', { class: 'ec-hash', 'aria-hidden': 'true' }, '#'), this.roomName));
    const header = h('header', { class: 'ec-header' }, title);
    if (switchRooms) {
      this.roomButton = h('button', {
        type: 'button', class: 'ec-chip', 'aria-expanded': 'false', 'aria-controls': 'ec-room-form',
        onclick: () => (this.roomForm.hidden ? this.openRoomForm() : this.closeRoomForm()),
      }, 'Switch room');
      title.append(this.roomButton);
      this.roomInput = h('input', {
        id: 'ec-room-input', name: 'room', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off',
        maxlength: '64', placeholder: 'e.g. random', 'aria-describedby': 'ec-room-error',
      });
      this.roomError = h('p', { id: 'ec-room-error', class: 'ec-field-error', role: 'alert' });
      this.roomForm = h('form', {
        id: 'ec-room-form', class: 'ec-inline-form ec-room-form', hidden: true, novalidate: true,
        onsubmit: submit(() => this.submitRoom()), onkeydown: onEscape(() => this.closeRoomForm()),
      },
      h('label', { for: 'ec-room-input' }, 'Room'),
      this.roomInput,
      h('button', { type: 'submit', class: 'ec-btn' }, 'Join'),
      h('button', { type: 'button', class: 'ec-btn ec-btn-quiet', onclick: () => this.closeRoomForm() }, 'Cancel'),
      this.roomError);
    }
    this.statusText = h('span', { class: 'ec-status-text' });
    this.statusDetail = h('span', { class: 'ec-status-detail', 'aria-hidden': 'true' });
    this.retryButton = h('button', { type: 'button', class: 'ec-link', hidden: true, onclick: () => this.conn?.reconnect() }, 'Retry now');
    const toggleCount = h('span', { class: 'ec-count' });
    this.peopleToggle = h('button', {
      type: 'button', class: 'ec-chip ec-people-toggle', 'aria-expanded': 'false', 'aria-controls': 'ec-people',
      onclick: () => this.togglePeople(),
    }, 'People ', toggleCount);
    header.append(
      h('p', { class: 'ec-status', role: 'status' },
        h('span', { class: 'ec-dot', 'aria-hidden': 'true' }), this.statusText, this.statusDetail),
      this.retryButton,
      this.peopleToggle);
    if (this.roomForm) header.append(this.roomForm);

    // Body: the message log and who is online.
    this.list = h('ol', { class: 'ec-list' });
    this.outboxList = h('ol', { class: 'ec-outbox', 'aria-label': 'Sending' });
    this.log = h('section', {
      class: 'ec-log', 'aria-label': 'Messages', tabindex: '0',
      onscroll: () => this.nearBottom() && this.hideJump(),
    }, this.list, this.outboxList);
    this.jump = h('button', { type: 'button', class: 'ec-jump', hidden: true, onclick: () => this.scrollToBottom() });
    const headCount = h('span', { class: 'ec-count' });
    this.counts = [toggleCount, headCount];
    this.userList = h('ul', { class: 'ec-users', 'aria-labelledby': 'ec-people-title' });
    this.people = h('aside', {
      id: 'ec-people', class: 'ec-people', 'aria-labelledby': 'ec-people-title',
      onkeydown: onEscape(() => {
        this.togglePeople(false);
        this.peopleToggle.focus();
      }),
    },
    h('h3', { id: 'ec-people-title', class: 'ec-people-title' }, 'Online ', headCount),
    this.userList);
    // On narrow layouts the people panel covers the log; a tap on the log puts it away.
    const main = h('div', { class: 'ec-main', onclick: () => this.togglePeople(false) }, this.log, this.jump);
    const body = h('div', { class: 'ec-body' }, main, this.people);

    // Footer: who you are, and the message box.
    this.myAvatar = h('span', { class: 'ec-avatar', 'aria-hidden': 'true' });
    this.myNick = h('strong', { class: 'ec-my-nick', dir: 'auto' });
    this.nickButton = h('button', {
      type: 'button', class: 'ec-link', 'aria-label': 'Change nickname', 'aria-expanded': 'false',
      'aria-controls': 'ec-nick-form', onclick: () => (this.nickForm.hidden ? this.openNickForm() : this.closeNickForm()),
    }, 'Change');
    this.nickNote = h('p', { class: 'ec-note', role: 'status' });
    this.nickInput = h('input', {
      id: 'ec-nick-input', name: 'nick', maxlength: '32', autocomplete: 'nickname', spellcheck: 'false',
      autocapitalize: 'off', 'aria-describedby': 'ec-nick-error',
    });
    this.nickSave = h('button', { type: 'submit', class: 'ec-btn' }, 'Save');
    this.nickError = h('p', { id: 'ec-nick-error', class: 'ec-field-error', role: 'alert' });
    this.nickForm = h('form', {
      id: 'ec-nick-form', class: 'ec-inline-form', hidden: true, novalidate: true,
      onsubmit: submit(() => this.submitNick()), onkeydown: onEscape(() => this.closeNickForm()),
    },
    h('label', { for: 'ec-nick-input' }, 'Nickname'),
    this.nickInput,
    this.nickSave,
    h('button', { type: 'button', class: 'ec-btn ec-btn-quiet', onclick: () => this.closeNickForm() }, 'Cancel'),
    this.nickError);

    this.inputLabel = h('label', { for: 'ec-input', class: 'ec-sr' });
    this.input = h('textarea', {
      id: 'ec-input', name: 'text', rows: '1', enterkeyhint: 'send', autocomplete: 'off',
      'aria-describedby': 'ec-send-error ec-hint',
      oninput: () => {
        this.autosize();
        this.showSendError('');
        if (this.input.value.trim()) this.conn?.typing();
      },
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
          event.preventDefault();
          this.send();
        } else if (event.key === 'Escape' && this.replyTo) {
          event.preventDefault();
          this.cancelReply();
        }
      },
    });
    this.typingLine = h('p', { class: 'ec-typing' });
    this.replyText = h('span', { class: 'ec-reply-text' });
    this.replyBar = h('div', { class: 'ec-reply-bar', hidden: true },
      this.replyText,
      h('button', { type: 'button', class: 'ec-link', 'aria-label': 'Cancel reply', onclick: () => {
        this.cancelReply();
        this.input.focus();
      } }, 'Cancel'));
    this.sendError = h('p', { id: 'ec-send-error', class: 'ec-field-error', role: 'alert' });
    this.roleBadge = h('span', { class: 'ec-role', hidden: true });
    this.closedNote = h('p', { class: 'ec-closed-note', role: 'alert', hidden: true });
    this.readonlyNote = h('p', { class: 'ec-note ec-readonly-note', hidden: true },
      'You can read this room but not write in it (read-only).');
    this.sendButton = h('button', { type: 'submit', class: 'ec-send-btn' },
      sendIcon(), h('span', { class: 'ec-send-label' }, 'Send'));
    this.counter = h('span', { class: 'ec-counter' });
    const footer = h('footer', { class: 'ec-footer' },
      h('div', { class: 'ec-me' },
        this.myAvatar, h('span', { class: 'ec-me-label' }, 'You are'), this.myNick, this.roleBadge, this.nickButton),
      this.nickNote,
      this.closedNote,
      this.readonlyNote,
      this.nickForm,
      this.typingLine,
      this.replyBar,
      h('form', { class: 'ec-send', onsubmit: submit(() => this.send()) },
        this.inputLabel,
        this.input,
        this.sendButton),
      h('div', { class: 'ec-footer-meta' },
        this.sendError,
        h('span', { id: 'ec-hint', class: 'ec-hint' }, 'Enter to send · Shift+Enter for a new line'),
        this.counter));

    this.announcer = h('div', { class: 'ec-sr', 'aria-live': 'polite', 'aria-relevant': 'additions' });
    this.root.append(header, body, footer, this.announcer);
    this.shadow.replaceChildren(sheet, this.root);
    this.renderNick();
    this.renderRole();
    this.renderUsers();
  }
}

// ---- helpers ------------------------------------------------------------------------------

/** The status the header shows, from the library's state. */
function viewState(conn, welcomed) {
  if (conn.status === 'open') return 'online';
  if (conn.status === 'closed') return 'closed';
  if (conn.catchingUp) return 'catching-up';
  if (conn.retryAt !== null) return 'waiting';
  return welcomed ? 'reconnecting' : 'connecting';
}

/**
 * Creates an element. Children that are strings become text nodes; `on*` props become
 * listeners; other props become attributes (never `innerHTML`).
 */
function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value == null) continue;
    if (key.startsWith('on')) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? '' : value);
  }
  element.append(...children);
  return element;
}

/** A nick in a system line, bidi-isolated like every nick. */
function bold(text) {
  return h('b', { dir: 'auto' }, text);
}

function avatar(nick) {
  const element = h('span', { class: 'ec-avatar', 'aria-hidden': 'true' }, initial(nick));
  element.style.setProperty('--ec-hue', String(hue(nick)));
  return element;
}

/** The start of a message, on one line, for quotes. */
function preview(text) {
  const line = String(text).replace(/\s+/g, ' ').trim();
  const chars = [...line];
  return chars.length > QUOTE_CHARS ? `${chars.slice(0, QUOTE_CHARS - 1).join('')}…` : line;
}

function initial(nick) {
  return ([...nick][0] ?? '?').toUpperCase();
}

/** A stable colour per nick, the same whatever its case; similar nicks get distant hues. */
function hue(nick) {
  let hash = 0x811c9dc5;
  for (const char of nick.toLowerCase()) hash = Math.imul(hash ^ char.codePointAt(0), 0x01000193);
  hash = Math.imul(hash ^ (hash >>> 15), 0x2c1b3c6d);
  return ((hash ^ (hash >>> 13)) >>> 0) % 360;
}

function sendIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'ec-send-icon');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M3.4 20.4 21 12 3.4 3.6l-.01 6.53L15 12 3.39 13.87z');
  svg.append(path);
  return svg;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'short' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' });
const yearDayFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'long', day: 'numeric' });

function timeElement(at) {
  const date = new Date(Number(at) || Date.now());
  return h('time', { datetime: date.toISOString(), title: fullFormat.format(date) }, timeFormat.format(date));
}

function dayKey(at) {
  return new Date(Number(at) || Date.now()).toDateString();
}

function dayLabel(at) {
  const date = new Date(Number(at) || Date.now());
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return 'Today';
  if (date.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return (date.getFullYear() === today.getFullYear() ? dayFormat : yearDayFormat).format(date);
}

// Storage can be unavailable (privacy modes, sandboxed frames): the chat works without it.
function storedNick() {
  try {
    const nick = localStorage.getItem(NICK_STORAGE_KEY);
    return isValidNick(nick) ? nick : null;
  } catch {
    return null;
  }
}

function storeNick(nick) {
  try {
    localStorage.setItem(NICK_STORAGE_KEY, nick);
  } catch {
    // not remembered across visits, that is all
  }
}
