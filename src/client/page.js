// The full page: the chat of the room named in `?room=` (with `&ticket=` for a private room), with
// a room switcher that keeps the address bar (and the back button) in step.
import { DEFAULT_ROOM, isValidRoom, mountChat } from './chat.js';

function roomFromUrl() {
  const room = new URLSearchParams(location.search).get('room');
  return isValidRoom(room) ? room : DEFAULT_ROOM;
}

function showRoom(room) {
  document.title = `#${room} · edge chat`;
}

const room = roomFromUrl();
showRoom(room);
const query = new URLSearchParams(location.search);
const chat = mountChat(document.getElementById('chat'), {
  room,
  nick: query.get('nick') ?? undefined,
  // `&ticket=` opens private rooms on the full page; an application embedding the chat passes its
  // ticket to the widget instead (data-edge-chat-ticket or EdgeChat.mount).
  ticket: query.get('ticket') || undefined,
  switchRooms: true,
  onRoomChange(next) {
    const url = new URL(location.href);
    url.searchParams.set('room', next);
    url.searchParams.delete('nick');
    history.pushState(null, '', url);
    showRoom(next);
  },
});

addEventListener('popstate', () => {
  const next = roomFromUrl();
  chat.switchRoom(next);
  showRoom(next);
});
