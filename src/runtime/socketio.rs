//! The room's Socket.IO clients (a child module of `chat_room`, so that it reads the room's
//! fields): their sockets, tagged in their attachments, and their long-polling sessions, held in
//! this object's memory; each broadcast encoded once per namespace for all of them (see
//! `chat::socketio`); and the heartbeat alarm that exists only while the room holds any of them.

use super::*;
use crate::chat::room::Refusal;
use crate::chat::socketio::{self, Heartbeat, Inbound, Namespace, Namespaces, SocketIoAttachment};
use std::collections::HashMap;
use worker::wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(inline_js = "
export function send_each(sockets, packets, skip) {
  for (const socket of sockets) {
    if (socket === skip) continue;
    try {
      for (const packet of packets) socket.send(packet);
    } catch {
      // closing: its close event removes it from the room
    }
  }
}
")]
extern "C" {
    /// Sends every packet of `packets`, in order, to every socket of the set `sockets` but `skip`.
    fn send_each(sockets: &Set, packets: &Array, skip: &JsValue);
}

/// Namespace joins one Engine.IO connection may make while the room is awake: each one sends a
/// welcome with history, which must not be a way around the rate limit.
const MAX_CONNECTS: u64 = 8;

/// Packets a polling session may have waiting: a client that stops polling in a busy room must not
/// grow the object's memory until its silence is noticed. Past it the session is over (its next
/// poll gets Engine.IO's close, and socket.io-client connects again).
const MAX_QUEUED_PACKETS: usize = 1_000;

/// Who sent a frame, and where its answers go: a member's WebSocket (native or Socket.IO), a
/// Socket.IO long-polling session (by sid, which is also its member id), or the member (by id)
/// of an event stream that posted over HTTP.
#[derive(Clone, Copy)]
pub(super) enum Peer<'a> {
    Socket(&'a WebSocket),
    Session(&'a str),
    Stream(&'a str),
}

/// A long-polling client. It lives in this object's memory only: if the object is evicted or
/// restarted, its next request gets 400 `unknown_session` and socket.io-client connects again.
struct Session {
    member: Attachment,
    state: SocketIoAttachment,
    /// Packets waiting for the next poll.
    queue: Vec<String>,
    /// Resolves the poll being held, with the body to answer it.
    waiting: Option<js_sys::Function>,
    last_seen: u64,
    /// Probing a WebSocket: polls are answered with `noop` at once.
    upgrading: bool,
    /// More than `MAX_QUEUED_PACKETS` piled up: nothing more is queued, and the session ends.
    overflowed: bool,
}

/// The room's Socket.IO clients. WebSockets are kept apart from `members` (native sockets), so
/// that the native broadcast path stays as it was and never sends a native frame to them.
#[derive(Default)]
pub(super) struct SocketIoSockets {
    /// Every Socket.IO WebSocket that is a member, to its member id.
    ids: Map,
    /// The WebSockets joined to each namespace, in `Namespace::ALL` order.
    joined: [Set; 2],
    /// Namespace joins per member id, while the room is awake (see `MAX_CONNECTS`). Counted in u64, as
    /// the room's last posts are timed: one kind of map fewer in the WASM module (0.3 KB gzipped).
    connects: RefCell<HashMap<String, u64>>,
    sessions: RefCell<HashMap<String, Session>>,
    /// WebSockets probing the upgrade of a polling session, to its sid.
    probes: Map,
    /// While a POST's packets are handled, polls are answered once at its end, with all of it.
    holding: Cell<bool>,
}

impl SocketIoSockets {
    pub(super) fn add(&self, socket: &JsValue, id: &str, namespaces: Namespaces) {
        self.ids.set(socket, &JsValue::from_str(id));
        for (namespace, joined) in Namespace::ALL.iter().zip(&self.joined) {
            if namespaces & namespace.bit() != 0 {
                joined.add(socket);
            } else {
                joined.delete(socket);
            }
        }
    }

    pub(super) fn id_of(&self, socket: &JsValue) -> Option<String> {
        self.ids.get(socket).as_string()
    }

    /// Forgets a socket; true if it was one of these.
    pub(super) fn remove(&self, socket: &JsValue) -> bool {
        for joined in &self.joined {
            joined.delete(socket);
        }
        self.probes.delete(socket);
        if let Some(id) = self.id_of(socket) {
            self.connects.borrow_mut().remove(&id);
        }
        self.ids.delete(socket)
    }

    /// WebSockets and polling sessions.
    pub(super) fn count(&self) -> usize {
        self.ids.size() as usize + self.sessions.borrow().len()
    }

    fn namespaces(&self, peer: Peer<'_>) -> Namespaces {
        match peer {
            Peer::Socket(socket) => Namespace::ALL
                .iter()
                .zip(&self.joined)
                .filter(|(_, joined)| joined.has(socket.as_ref()))
                .map(|(ns, _)| ns.bit())
                .sum(),
            Peer::Session(sid) => self.sessions.borrow().get(sid).map_or(0, |session| session.state.namespaces),
            Peer::Stream(_) => 0,
        }
    }

    fn set_namespaces(&self, peer: Peer<'_>, id: &str, namespaces: Namespaces) {
        match peer {
            Peer::Socket(socket) => self.add(socket.as_ref(), id, namespaces),
            Peer::Session(sid) => {
                if let Some(session) = self.sessions.borrow_mut().get_mut(sid) {
                    session.state.namespaces = namespaces;
                }
            }
            Peer::Stream(_) => {}
        }
    }

    /// A member socket by id, for moderation's ejections.
    pub(super) fn socket_of(&self, id: &str) -> Option<WebSocket> {
        let mut found = None;
        self.ids.for_each(&mut |value, key| {
            if found.is_none() && value.as_string().as_deref() == Some(id) {
                found = Some(WebSocket::from(key.unchecked_into::<web_sys::WebSocket>()));
            }
        });
        found
    }

    /// The sid a WebSocket probes the upgrade of, if it is such a probe.
    pub(super) fn probe_of(&self, socket: &JsValue) -> Option<String> {
        self.probes.get(socket).as_string()
    }

    pub(super) fn forget_probe(&self, socket: &JsValue) {
        self.probes.delete(socket);
    }

    pub(super) fn has_session(&self, sid: &str) -> bool {
        self.sessions.borrow().contains_key(sid)
    }

    /// Sends broadcast frames to every Socket.IO client but `skip`: each frame's packets built
    /// once per namespace, each namespace's packets crossing into JS once for all its WebSockets,
    /// and queued for every polling session.
    pub(super) fn deliver(&self, frames: &[String], skip: Option<Peer<'_>>) {
        if self.count() == 0 {
            return;
        }
        let mut packets: [Vec<String>; 2] = Default::default();
        for frame in frames {
            for (all, more) in packets.iter_mut().zip(socketio::broadcast(frame)) {
                all.extend(more);
            }
        }
        if !self.sessions.borrow().is_empty() {
            let mut sessions = self.sessions.borrow_mut();
            for (sid, session) in sessions.iter_mut().filter(|(_, session)| !session.overflowed) {
                if matches!(skip, Some(Peer::Session(skipped)) if skipped == sid) {
                    continue;
                }
                for (namespace, packets) in Namespace::ALL.iter().zip(&packets) {
                    if session.state.namespaces & namespace.bit() != 0 {
                        session.queue.extend(packets.iter().cloned());
                    }
                }
                self.release(session);
                if session.queue.len() > MAX_QUEUED_PACKETS {
                    session.overflowed = true;
                    session.queue = Vec::new();
                }
            }
        }
        let skip = match skip {
            Some(Peer::Socket(socket)) => JsValue::from(socket.as_ref()),
            _ => JsValue::UNDEFINED,
        };
        for (joined, packets) in self.joined.iter().zip(packets) {
            if joined.size() > 0 && !packets.is_empty() {
                let packets: Array = packets.iter().map(|p| JsValue::from(JsString::from(p.as_str()))).collect();
                send_each(joined, &packets, &skip);
            }
        }
    }

    /// Queues packets for a polling session, answering its held poll unless a POST is being read.
    fn queue(&self, sid: &str, packets: impl IntoIterator<Item = String>) {
        if let Some(session) = self.sessions.borrow_mut().get_mut(sid) {
            session.queue.extend(packets);
            self.release(session);
        }
    }

    /// Answers the held poll with everything queued, in one body.
    fn release(&self, session: &mut Session) {
        if self.holding.get() || session.queue.is_empty() {
            return;
        }
        if let Some(resolve) = session.waiting.take() {
            let body = socketio::join_payload(&std::mem::take(&mut session.queue));
            let _ = resolve.call1(&JsValue::NULL, &JsValue::from_str(&body));
        }
    }

    fn release_all(&self) {
        self.holding.set(false);
        for session in self.sessions.borrow_mut().values_mut() {
            self.release(session);
        }
    }

    fn ping_all(&self) {
        let sockets = Set::new(&JsValue::UNDEFINED);
        self.ids.for_each(&mut |_, socket| drop(sockets.add(&socket)));
        send_each(&sockets, &Array::of1(&JsString::from(socketio::PING)), &JsValue::UNDEFINED);
        for session in self.sessions.borrow_mut().values_mut() {
            session.queue.push(socketio::PING.to_owned());
            self.release(session);
        }
    }

    /// Sessions that neither hold a poll nor made a request for `silence_ms` (their client is gone),
    /// and those that overflowed.
    fn silent_sessions(&self, now: u64, silence_ms: u64) -> Vec<String> {
        let sessions = self.sessions.borrow();
        let silent = sessions
            .iter()
            .filter(|(_, s)| s.overflowed || (s.waiting.is_none() && now.saturating_sub(s.last_seen) > silence_ms));
        silent.map(|(sid, _)| sid.clone()).collect()
    }

    /// Ends a polling session, answering a held poll with what is queued and Engine.IO's close.
    /// True if there was one.
    pub(super) fn end_session(&self, sid: &str) -> bool {
        let Some(mut session) = self.sessions.borrow_mut().remove(sid) else { return false };
        self.connects.borrow_mut().remove(sid);
        session.queue.push("1".to_owned());
        self.holding.set(false);
        self.release(&mut session);
        true
    }

    pub(super) fn rename_session(&self, sid: &str, member: Attachment) {
        if let Some(session) = self.sessions.borrow_mut().get_mut(sid) {
            session.member = member;
        }
    }
}

/// How a reaction is answered: as native frames, or as a Socket.IO client's events in the
/// namespace it emitted in, with the ack it waits for.
pub(super) enum Answer {
    Native,
    SocketIo { namespace: Namespace, ack: Option<u64> },
}

impl Answer {
    /// The ack an emit waits for, if any.
    pub(super) fn ack_ok(&self) -> Option<(Namespace, u64)> {
        match self {
            Answer::SocketIo { namespace, ack: Some(id) } => Some((*namespace, *id)),
            _ => None,
        }
    }
}

impl ChatRoom {
    /// A new Socket.IO client, admitted like a native socket: a WebSocket, or a polling session
    /// whose handshake is answered with the open packet. Its welcome waits for the namespace it
    /// joins; the others hear of it now.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn socketio_join(
        &self,
        mut state: SocketIoAttachment,
        transport: Transport,
        client_key: ClientKey,
        nick: Option<&str>,
        identity: Option<Identity>,
        address: Option<String>,
        client_id: Option<String>,
        first: bool,
        now: u64,
    ) -> Result<Response, RequestError> {
        let id = random_id();
        let pair = match transport {
            Transport::Websocket => Some(self.accept(&id)?),
            Transport::Polling => None,
        };
        let joined = self.room.borrow_mut().join(id.clone(), client_key, nick, identity, address, client_id, now, random_u64);
        state.refused_nick = joined.refused_nick.map(|code| ServerFrame::error(code).to_json());
        if let Some(reservation) = &joined.reservation {
            if let Err(error) = self.store.reserve(reservation) {
                worker::console_error!("edge-chat: storing a nick reservation failed: {error}");
            }
        }
        let response = match pair {
            Some(pair) => {
                let attachment = SocketAttachment { member: joined.attachment, batch: false, seen: now, socketio: Some(state) };
                attach(&pair.server, &attachment);
                send_raw(&pair.server, &JsString::from(self.heartbeat.open_packet(&id, false)));
                self.wires.sio.add(pair.server.as_ref(), &id, 0);
                Response::from_websocket(pair.client).map_err(internal("answering the upgrade"))?
            }
            None => {
                let session = Session {
                    member: joined.attachment,
                    state,
                    queue: Vec::new(),
                    waiting: None,
                    last_seen: now,
                    upgrading: false,
                    overflowed: false,
                };
                self.wires.sio.sessions.borrow_mut().insert(id.clone(), session);
                text_response(self.heartbeat.open_packet(&id, true))?
            }
        };
        if let Some(announcement) = &joined.announcement {
            let step = self.wires.outbox.borrow_mut().push(announcement.to_json());
            self.carry_out(step);
        }
        if first {
            self.keep(now);
        } else {
            self.arm_heartbeat(now);
        }
        self.sweep_if_due(now);
        Ok(response)
    }

    /// A request of an existing Engine.IO session: a poll (held until packets are queued), a POST
    /// of packets, or the WebSocket that probes the upgrade.
    pub(super) async fn socketio_session(
        &self,
        sid: &str,
        transport: Transport,
        post: bool,
        mut request: Request,
    ) -> Result<Response, RequestError> {
        if !self.wires.sio.has_session(sid) {
            return Err(RequestError::UnknownSession);
        }
        if transport == Transport::Websocket {
            let member = self.wires.sio.sessions.borrow().get(sid).map(|s| (s.member.clone(), s.state.clone()));
            let Some((member, state)) = member else { return Err(RequestError::UnknownSession) };
            let pair = self.accept(sid)?;
            attach(&pair.server, &SocketAttachment { member, batch: false, seen: now_ms(), socketio: Some(state) });
            self.wires.sio.probes.set(pair.server.as_ref(), &JsValue::from_str(sid));
            return Response::from_websocket(pair.client).map_err(internal("answering the upgrade"));
        }
        let overflowed = match self.wires.sio.sessions.borrow_mut().get_mut(sid) {
            Some(session) => {
                session.last_seen = now_ms();
                session.overflowed
            }
            None => false,
        };
        if overflowed {
            self.depart_session(sid);
            return if post { text_response("ok".to_owned()) } else { text_response("1".to_owned()) };
        }
        if post {
            let body = request.text().await.map_err(|_| RequestError::BadTransport)?;
            if body.len() > socketio::MAX_PAYLOAD {
                return Err(RequestError::PayloadTooLarge);
            }
            self.wires.sio.holding.set(true);
            for packet in socketio::split_payload(&body) {
                if !self.wires.sio.has_session(sid) {
                    break;
                }
                self.socketio_packet(Peer::Session(sid), sid, packet);
            }
            self.wires.sio.release_all();
            return text_response("ok".to_owned());
        }
        let held = {
            let mut sessions = self.wires.sio.sessions.borrow_mut();
            let Some(session) = sessions.get_mut(sid) else { return Err(RequestError::UnknownSession) };
            if session.upgrading {
                return text_response(socketio::NOOP.to_owned());
            }
            if !session.queue.is_empty() {
                return text_response(socketio::join_payload(&std::mem::take(&mut session.queue)));
            }
            // One poll at a time: an earlier one still held is let go empty-handed.
            if let Some(earlier) = session.waiting.take() {
                let _ = earlier.call1(&JsValue::NULL, &JsValue::from_str(socketio::NOOP));
            }
            let mut resolver = None;
            let promise = js_sys::Promise::new(&mut |resolve, _reject| resolver = Some(resolve));
            session.waiting = resolver;
            promise
        };
        let body = JsFuture::from(held).await.ok().and_then(|body| body.as_string()).unwrap_or_else(|| socketio::NOOP.to_owned());
        text_response(body)
    }

    /// A frame on a WebSocket probing a polling session's upgrade: `2probe` is answered `3probe`
    /// (and the held poll released with `noop`), then `5` moves the session onto the WebSocket.
    pub(super) fn socketio_probe(&self, socket: WebSocket, sid: &str, message: JsValue) {
        match message.as_string().as_deref() {
            Some("2probe") => {
                send_raw(&socket, &JsString::from("3probe"));
                if let Some(session) = self.wires.sio.sessions.borrow_mut().get_mut(sid) {
                    session.upgrading = true;
                    if let Some(resolve) = session.waiting.take() {
                        let _ = resolve.call1(&JsValue::NULL, &JsValue::from_str(socketio::NOOP));
                    }
                }
            }
            Some("5") => {
                self.wires.sio.probes.delete(socket.as_ref());
                let Some(session) = self.wires.sio.sessions.borrow_mut().remove(sid) else { return };
                let Session { member, state, queue, waiting, .. } = session;
                if let Some(resolve) = waiting {
                    let _ = resolve.call1(&JsValue::NULL, &JsValue::from_str(socketio::NOOP));
                }
                self.wires.sio.add(socket.as_ref(), sid, state.namespaces);
                attach(&socket, &SocketAttachment { member, batch: false, seen: now_ms(), socketio: Some(state) });
                queue.iter().for_each(|packet| send_raw(&socket, &JsString::from(packet.as_str())));
            }
            _ => {}
        }
    }

    /// One packet from a Socket.IO WebSocket.
    pub(super) fn socketio_message(&self, socket: WebSocket, id: &str, message: JsValue) {
        let packet = match message.dyn_ref::<JsString>() {
            Some(text) if text.length() as usize > socketio::MAX_PAYLOAD + 64 => {
                return self.socketio_refuse(Peer::Socket(&socket), ErrorCode::TooLong);
            }
            Some(_) => message.as_string().unwrap_or_default(),
            // Engine.IO sends attachments of binary events as binary frames.
            None => return self.socketio_refuse(Peer::Socket(&socket), ErrorCode::Unsupported),
        };
        self.socketio_packet(Peer::Socket(&socket), id, &packet);
    }

    /// One Engine.IO packet, from either transport.
    fn socketio_packet(&self, peer: Peer<'_>, id: &str, packet: &str) {
        match socketio::parse(packet) {
            Inbound::Pong | Inbound::Noop | Inbound::Upgrade | Inbound::Ignored => {}
            Inbound::Ping(data) => self.socketio_send(peer, format!("3{data}")),
            Inbound::Close => self.socketio_close(peer, 1000, "client closed"),
            Inbound::Malformed => self.socketio_close(peer, 1002, "not an Engine.IO 4 packet"),
            Inbound::Connect(Err(name)) => self.socketio_send(peer, socketio::unknown_namespace(&name)),
            Inbound::Connect(Ok(namespace)) => self.socketio_connect(peer, id, namespace),
            Inbound::Disconnect(namespace) => {
                let namespaces = self.wires.sio.namespaces(peer) & !namespace.bit();
                self.wires.sio.set_namespaces(peer, id, namespaces);
                self.socketio_attach(peer);
            }
            Inbound::Binary { namespace, ack } => {
                if self.wires.sio.namespaces(peer) & namespace.bit() != 0 {
                    self.answer(peer, &Answer::SocketIo { namespace, ack }, &ServerFrame::error(ErrorCode::Unsupported));
                }
            }
            Inbound::Event { namespace, ack, frame } => {
                // As a Socket.IO server does, events in a namespace the client has not joined are dropped.
                if self.wires.sio.namespaces(peer) & namespace.bit() == 0 {
                    return;
                }
                // A frame that is not even an event still costs the sender a token, as a native bad frame does.
                let text = match &frame {
                    Ok(text) => text.as_str(),
                    Err(_) => "{",
                };
                self.load_history();
                let reaction = self.room.borrow_mut().receive(id, Incoming::Text(text), now_ms(), &*self.store);
                let reaction = match (frame, reaction) {
                    (Err(code), Reaction::Reply(ServerFrame::Error { .. })) => Reaction::Reply(ServerFrame::error(code)),
                    (_, reaction) => reaction,
                };
                self.react(peer, reaction, &Answer::SocketIo { namespace, ack });
            }
        }
    }

    fn socketio_close(&self, peer: Peer<'_>, code: u16, reason: &str) {
        match peer {
            Peer::Socket(socket) => {
                let _ = socket.close(Some(code), Some(reason));
                self.depart(socket);
            }
            Peer::Session(sid) => self.depart_session(sid),
            Peer::Stream(_) => {}
        }
    }

    /// Before the room closes a Socket.IO client for good (kicked, banned, flooding, ticket expired): a
    /// DISCONNECT for each namespace it joined, which socket.io-client takes as "io server disconnect"
    /// and does not reconnect from, as a native client stops on those close codes.
    pub(super) fn socketio_goodbye(&self, peer: Peer<'_>) {
        let joined = self.wires.sio.namespaces(peer);
        for namespace in Namespace::ALL.into_iter().filter(|ns| joined & ns.bit() != 0) {
            self.socketio_send(peer, socketio::disconnect(namespace));
        }
    }

    /// A polling session ends (its client closed or went silent): it leaves the room.
    fn depart_session(&self, sid: &str) {
        if !self.wires.sio.end_session(sid) {
            return;
        }
        let left = self.room.borrow_mut().leave(sid, now_ms());
        if let Some(left) = left {
            self.broadcast(left.to_json());
        }
        self.schedule_expiry_if_empty();
        self.socketio_departed();
    }

    pub(super) fn socketio_send(&self, peer: Peer<'_>, packet: String) {
        match peer {
            Peer::Socket(socket) => send_raw(socket, &JsString::from(packet)),
            Peer::Session(sid) => self.wires.sio.queue(sid, [packet]),
            Peer::Stream(_) => {}
        }
    }

    /// An error for the client's first joined namespace (a binary or oversized frame names none).
    fn socketio_refuse(&self, peer: Peer<'_>, code: ErrorCode) {
        let joined = self.wires.sio.namespaces(peer);
        let namespace = Namespace::ALL.into_iter().find(|ns| joined & ns.bit() != 0).unwrap_or(Namespace::Root);
        self.answer(peer, &Answer::SocketIo { namespace, ack: None }, &ServerFrame::error(code));
    }

    /// What the client carries besides its membership: its room name, `since`, namespaces.
    fn socketio_state(&self, peer: Peer<'_>) -> Option<SocketIoAttachment> {
        match peer {
            Peer::Socket(socket) => attachment(socket).and_then(|attachment| attachment.socketio),
            Peer::Session(sid) => self.wires.sio.sessions.borrow().get(sid).map(|session| session.state.clone()),
            Peer::Stream(_) => None,
        }
    }

    /// Joins a namespace: the connect ack with the nick as `sid`, then the welcome (history as of
    /// now: frames still held are flushed first, so the client gets only later ones).
    fn socketio_connect(&self, peer: Peer<'_>, id: &str, namespace: Namespace) {
        let Some(state) = self.socketio_state(peer) else { return };
        let namespaces = self.wires.sio.namespaces(peer);
        if namespaces & namespace.bit() != 0 {
            return;
        }
        let connects = {
            let mut connects = self.wires.sio.connects.borrow_mut();
            let count = connects.entry(id.to_owned()).or_default();
            *count += 1;
            *count
        };
        if connects > MAX_CONNECTS {
            return self.socketio_close(peer, close::POLICY_VIOLATION, "too many namespace connects");
        }
        if !self.load_history() {
            let [root, chat] = socketio::refusal("unavailable", ErrorCode::Unavailable.message());
            return self.socketio_send(peer, if namespace == Namespace::Root { root } else { chat });
        }
        let window = Window::for_welcome(state.since, state.after);
        let mut history = match self.store.read(window) {
            Ok(history) => history,
            Err(error) => {
                worker::console_error!("edge-chat: reading history for a Socket.IO welcome failed: {error}");
                Vec::new()
            }
        };
        window.fit_budget(&mut history);
        let cleared = self.missed_clear(window).unwrap_or_else(|_| {
            worker::console_error!("edge-chat: reading the last clear for a Socket.IO welcome failed");
            false
        });
        self.flush();
        let room = self.room.borrow();
        let Some(you) = room.you(id) else { return };
        let (nick, users) = (you.nick.clone(), room.nicks());
        let (room_name, seq) = (state.room.clone(), room.last_seq());
        let welcome =
            ServerFrame::Welcome { room: room_name, nick: nick.clone(), users: users.clone(), history, you, seq, cleared };
        drop(room);
        let mut packets = vec![socketio::connect_ack(namespace, &nick)];
        packets.extend(socketio::welcome(namespace, &welcome.to_json(), &nick, &users));
        // As after a native welcome: why the nick asked for was not given, once.
        if let Some(error) = &state.refused_nick {
            packets.push(socketio::event(namespace, "error", error));
            self.socketio_forget_refused_nick(peer);
        }
        match peer {
            Peer::Socket(socket) => packets.iter().for_each(|packet| send_raw(socket, &JsString::from(packet.as_str()))),
            Peer::Session(sid) => self.wires.sio.queue(sid, packets),
            Peer::Stream(_) => {}
        }
        self.wires.sio.set_namespaces(peer, id, namespaces | namespace.bit());
        self.socketio_attach(peer);
    }

    fn socketio_forget_refused_nick(&self, peer: Peer<'_>) {
        match peer {
            Peer::Socket(socket) => {
                if let Some(mut attachment) = attachment(socket) {
                    if let Some(state) = attachment.socketio.as_mut() {
                        state.refused_nick = None;
                    }
                    attach(socket, &attachment);
                }
            }
            Peer::Session(sid) => {
                if let Some(session) = self.wires.sio.sessions.borrow_mut().get_mut(sid) {
                    session.state.refused_nick = None;
                }
            }
            Peer::Stream(_) => {}
        }
    }

    /// Saves a WebSocket's joined namespaces in its attachment, for after hibernation.
    fn socketio_attach(&self, peer: Peer<'_>) {
        let Peer::Socket(socket) = peer else { return };
        let Some(mut attachment) = attachment(socket) else { return };
        if let Some(state) = attachment.socketio.as_mut() {
            state.namespaces = self.wires.sio.namespaces(peer);
        }
        attach(socket, &attachment);
    }

    /// Plans the heartbeat's alarm for a new Socket.IO client, unless a ping round is planned.
    fn arm_heartbeat(&self, now: u64) {
        if self.next_ping.get().is_none() {
            self.plan_alarm(now);
        }
    }

    /// The alarm's Socket.IO duty, when its time has come: ping every Socket.IO client and end
    /// the polling sessions that went silent. The caller plans the next round (`plan_alarm`).
    pub(super) fn ping_round(&self, now: u64) {
        if self.wires.sio.count() == 0 || self.next_ping.get().is_some_and(|at| at > now) {
            return;
        }
        self.next_ping.set(None);
        self.wires.sio.ping_all();
        let silence = self.heartbeat.interval_ms + self.heartbeat.timeout_ms;
        for sid in self.wires.sio.silent_sessions(now, silence) {
            self.depart_session(&sid);
        }
    }

    /// After a Socket.IO client left: with none left, the heartbeat's need of the alarm goes.
    pub(super) fn socketio_departed(&self) {
        if self.wires.sio.count() == 0 && self.next_ping.get().is_some() {
            self.plan_alarm(now_ms());
        }
    }

    /// A frame for one Socket.IO client alone (its own message with its `cid`), as the events a
    /// broadcast of it makes in each namespace the client joined.
    pub(super) fn socketio_own(&self, peer: Peer<'_>, json: &str) {
        let joined = self.wires.sio.namespaces(peer);
        for (namespace, packets) in Namespace::ALL.iter().zip(socketio::broadcast(json)) {
            if joined & namespace.bit() != 0 {
                packets.into_iter().for_each(|packet| self.socketio_send(peer, packet));
            }
        }
    }

    /// Answers a Socket.IO emit: a reply as an event in its namespace (an error as the ack when one
    /// is awaited).
    pub(super) fn answer_socketio(&self, peer: Peer<'_>, namespace: Namespace, ack: Option<u64>, frame: &ServerFrame) {
        self.flush();
        let json = frame.to_json();
        let packet = match frame {
            ServerFrame::Error { code, .. } => socketio::refused(namespace, ack, &json, &socketio::code_name(*code)),
            _ => socketio::frame_event(namespace, &json),
        };
        self.socketio_send(peer, packet);
    }
}

/// A Socket.IO client's state at the upgrade or handshake: no namespace joined yet.
pub(super) fn upgrade_state(room: &str, since: Option<u64>, after: Option<u64>) -> SocketIoAttachment {
    SocketIoAttachment { room: room.to_owned(), since, after, namespaces: 0, refused_nick: None }
}

fn text_response(body: String) -> Result<Response, RequestError> {
    let headers = Headers::new();
    headers.set("content-type", "text/plain; charset=UTF-8").map_err(internal("setting the content type"))?;
    headers.set("cache-control", "no-store").map_err(internal("setting the content type"))?;
    Ok(Response::ok(body).map_err(internal("answering a poll"))?.with_headers(headers))
}

/// A Socket.IO client the room refused (banned, too many connections...), on either transport
/// (see `refused_socket`).
pub(super) fn refused(refusal: &Refusal, transport: Transport) -> Result<Response, RequestError> {
    let code = match &refusal.error {
        ServerFrame::Error { code, .. } => socketio::code_name(*code),
        _ => String::new(),
    };
    match transport {
        Transport::Websocket => refused_socket(&code, refusal.reason, refusal.code),
        Transport::Polling => refused_poll(&code, refusal.reason),
    }
}

/// The packets that refuse a Socket.IO client: Engine.IO's open, then a CONNECT_ERROR with the
/// code for each namespace, which socket.io-client reports as `connect_error` and does not retry.
fn refusal_packets(code: &str, message: &str, can_upgrade: bool) -> [String; 3] {
    let [root, chat] = socketio::refusal(code, message);
    [Heartbeat::default().open_packet("refused", can_upgrade), root, chat]
}

/// A refused polling handshake: the refusal packets as its answer, as a WebSocket would get them.
pub(crate) fn refused_poll(code: &str, message: &str) -> Result<Response, RequestError> {
    text_response(socketio::join_payload(&refusal_packets(code, message, false)))
}

/// A refused Socket.IO upgrade: the refusal packets, then the close code a native socket would get.
pub(crate) fn refused_socket(code: &str, message: &str, close_code: u16) -> Result<Response, RequestError> {
    let pair = WebSocketPair::new().map_err(internal("creating a WebSocket pair"))?;
    pair.server.accept().map_err(internal("accepting a refused socket"))?;
    for packet in refusal_packets(code, message, false) {
        pair.server.send_with_str(packet).map_err(internal("sending a refusal"))?;
    }
    pair.server.close(Some(close_code), Some(close::reply_reason(message))).map_err(internal("closing a refused socket"))?;
    Response::from_websocket(pair.client).map_err(internal("answering a refused upgrade"))
}
