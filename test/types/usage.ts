// A typed app using edge-chat-client, checked by `tsc -p test/types` in npm test (never run):
// if the declarations drift from what an app writes, or stop catching mistakes, this fails.
import {
  ChatError,
  connect,
  isValidRoom,
  TERMINAL_CLOSE_CODES,
  type ChatMessage,
  type ClientFrame,
  type OutboxEntry,
  type TypingUser,
  type HistoryResponse,
  type ServerData,
  type ServerFrame,
  type Status,
  type StoredMessage,
} from 'edge-chat-client';

const room = connect({
  url: 'https://chat.example.com',
  room: 'lobby',
  nick: 'Ann',
  getTicket: async () => 'a-ticket',
  WebSocket, // the DOM's WebSocket fits the option
  batch: false,
});

room.addEventListener('message', (event) => {
  const stored: StoredMessage = event.detail;
  const source: 'live' | 'welcome' | 'history' = event.source;
  // A tombstone has no text: narrowing on `deleted` tells them apart.
  if (stored.deleted) return console.log(`#${stored.id} by ${stored.nick} was deleted`);
  const message: ChatMessage = stored;
  console.log(message.id.toFixed(0), message.nick.toUpperCase(), message.text, message.at, source, message.uid);
});
room.addEventListener('deleted', ({ detail, message }) => console.log(detail.id, detail.at, message?.deleted));
room.addEventListener('moderated', ({ detail }) => `${detail.by} ${detail.action} ${detail.target ?? 'the room'}`);
room.addEventListener('messages', ({ detail }) => detail.added.forEach((m) => m.id));
room.addEventListener('users', ({ detail }) => detail.join(', '));
room.addEventListener('welcome', ({ detail, resumed }) => detail.history.length + (resumed ? 1 : 0));
room.addEventListener('joined', ({ detail }) => detail.nick);
room.addEventListener('left', ({ detail }) => detail.at);
room.addEventListener('renamed', ({ detail, mine }) => (mine ? detail.to : detail.from));
room.addEventListener('error', ({ detail, request }) => {
  if (detail.code === 'rate_limited' && request?.kind === 'message') console.log(request.text);
});
room.addEventListener('status', ({ detail }) => {
  const status: Status = detail.status;
  if (status === 'closed' && detail.closeReason) console.log(detail.closeReason.code, detail.closeReason.error);
  if (detail.retryAt !== null) console.log(new Date(detail.retryAt));
});
room.addEventListener('frame', ({ detail }) => detail.type);
room.addEventListener('edited', ({ detail, message }) => `${detail.id} ${detail.text} ${detail.edited_at} ${message?.text}`);
room.addEventListener('reactions', ({ detail, message }) => Object.entries(detail.counts).length + (message?.reactions?.['👍'] ?? 0));
room.addEventListener('updated', ({ detail, previous }) => (detail.deleted ? previous.id : detail.edited_at ?? detail.reply_to));
room.addEventListener('typing', ({ detail }) => detail.map((typist: TypingUser) => `${typist.nick} until ${typist.until}`));
room.addEventListener('outbox', ({ detail }) => detail.map((entry: OutboxEntry) => `${entry.cid}: ${entry.text} ${entry.replyTo}`));

async function change(message: StoredMessage): Promise<void> {
  if (room.canEdit(message)) await room.edit(message.id, 'fixed').then((edited) => edited.edited_at);
  const counts = (await room.react(message.id, '👍')).counts;
  if (room.isOwn(message)) await room.delete(message.id);
  room.typing();
  console.log(counts['👍'], room.lastSeq, room.clientId, room.editWindowMs, room.outbox.length, room.typingUsers);
}

async function post(): Promise<number> {
  try {
    const stored = await room.send('hello', { replyTo: 41 });
    return stored.id;
  } catch (error) {
    if (error instanceof ChatError && error.code === 'rate_limited') return -1;
    throw error;
  }
}

const newNick: Promise<string> = room.rename('Bob');
const window: readonly StoredMessage[] = room.messages;
if (room.you?.role === 'moderator') {
  void room.delete(41).then((done) => (done.type === 'moderated' ? done.action : done.seq));
  void room.kick('Troll');
  void room.ban('Troll', { duration: 3600 });
  void room.ban('Troll');
  void room.unban('Troll');
  void room.mute('Troll', { duration: 600 });
  void room.slow(10);
  void room.clear();
}
const terminal: readonly number[] = TERMINAL_CLOSE_CODES;
if (isValidRoom('x')) room.reconnect();

// Every frame of the protocol narrows by its type.
function describe(data: ServerData): string {
  const frames: ServerFrame[] = Array.isArray(data) ? data : [data];
  return frames
    .map((frame) => {
      switch (frame.type) {
        case 'welcome':
          return `${frame.nick} in ${frame.room} with ${frame.users.length}`;
        case 'message':
          return `${frame.id}`;
        case 'joined':
        case 'left':
          return frame.nick;
        case 'renamed':
          return `${frame.from}→${frame.to}`;
        case 'deleted':
          return `-${frame.id}`;
        case 'edited':
          return `${frame.id}: ${frame.text}`;
        case 'reactions':
          return JSON.stringify(frame.counts);
        case 'typing':
          return `${frame.nick}…`;
        case 'moderated':
          return `${frame.by}: ${frame.action} ${frame.target}`;
        case 'error':
          return frame.code;
      }
    })
    .join();
}
const outgoing: ClientFrame[] = [
  { type: 'message', text: 'hi', reply_to: 1, cid: 'a1' },
  { type: 'edit', id: 1, text: 'hello' },
  { type: 'react', id: 1, emoji: '🎉' },
  { type: 'typing' },
  { type: 'nick', nick: 'Cy' },
  { type: 'ban', nick: 'Troll', duration: 60 },
  { type: 'clear' },
  'ping',
];
const page: HistoryResponse = { room: 'lobby', messages: [] };

// Mistakes the declarations must catch.
// @ts-expect-error: room is required
connect({ url: 'https://chat.example.com' });
// @ts-expect-error: not a status
const wrong: Status = 'online';
// @ts-expect-error: a message event's detail has no `from`
room.addEventListener('message', (event) => event.detail.from);
// @ts-expect-error: send takes text
room.send(42);
// @ts-expect-error: users cannot be changed by the app
room.users.push('Mallory');
// @ts-expect-error: a mute needs a duration
room.mute('Troll');
// @ts-expect-error: an edit needs the new text
room.edit(41);
// @ts-expect-error: the outbox is the library's
room.outbox.pop();
// @ts-expect-error: a tombstone has no text
room.messages.filter((m) => m.deleted).map((m): string => m.text);

room.close();
export { change, post, newNick, window, terminal, describe, outgoing, page, wrong };
