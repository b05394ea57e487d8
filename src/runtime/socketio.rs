//! The room's Socket.IO clients (a child module of `chat_room`, so that it reads the room's
//! fields): their sockets, tagged in their attachments, each broadcast encoded once per namespace
//! for all of them (see `chat::socketio`), and the heartbeat alarm that exists only while the room
//! holds any of them.

use super::*;
use crate::chat::socketio::{self, Heartbeat, Inbound, Namespace, Namespaces, SocketIoAttachment};
use std::collections::HashMap;

#[wasm_bindgen(inline_js = "
export function send_each(sockets, packets) {
  for (const socket of sockets) {
    try {
      for (const packet of packets) socket.send(packet);
    } catch {
      // closing: its close event removes it from the room
    }
  }
}
")]
extern "C" {
    /// Sends every packet of `packets`, in order, to every socket of the set `sockets`.
    fn send_each(sockets: &Set, packets: &Array);
}

/// Namespace joins one Engine.IO connection may make while the room is awake: each one sends a
/// welcome with history, which must not be a way around the rate limit.
const MAX_CONNECTS: u32 = 8;

/// The room's Socket.IO sockets. Kept apart from `members` (native sockets), so that the native
/// broadcast path stays as it was and never sends a native frame to a Socket.IO client.
#[derive(Default)]
pub(super) struct SocketIoSockets {
    /// Every Socket.IO socket that is a member, to its member id.
    ids: Map,
    /// The sockets joined to each namespace, in `Namespace::ALL` order.
    joined: [Set; 2],
    /// Namespace joins per member id, while the room is awake (see `MAX_CONNECTS`).
    connects: RefCell<HashMap<String, u32>>,
}

impl SocketIoSockets {
    pub(super) fn add(&self, socket: &JsValue, id: &str, namespaces: Namespaces) {
        self.ids.set(socket, &JsValue::from_str(id));
        for (namespace, joined) in Namespace::ALL.iter().zip(&self.joined) {
            if namespaces & namespace.bit() != 0 {
                joined.add(socket);
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
        self.ids.delete(socket)
    }

    pub(super) fn count(&self) -> usize {
        self.ids.size() as usize
    }

    fn namespaces_of(&self, socket: &JsValue) -> Namespaces {
        Namespace::ALL.iter().zip(&self.joined).filter(|(_, joined)| joined.has(socket)).map(|(ns, _)| ns.bit()).sum()
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

    /// Sends broadcast frames to every Socket.IO socket: each frame's packets built once per
    /// namespace, and each namespace's packets crossing into JS once.
    pub(super) fn deliver(&self, frames: &[String]) {
        if self.ids.size() == 0 {
            return;
        }
        let mut packets: [Vec<String>; 2] = Default::default();
        for frame in frames {
            for (all, more) in packets.iter_mut().zip(socketio::broadcast(frame)) {
                all.extend(more);
            }
        }
        for (joined, packets) in self.joined.iter().zip(packets) {
            if joined.size() > 0 && !packets.is_empty() {
                let packets: Array = packets.iter().map(|p| JsValue::from(JsString::from(p.as_str()))).collect();
                send_each(joined, &packets);
            }
        }
    }

    fn ping_all(&self) {
        let sockets = Set::new(&JsValue::UNDEFINED);
        self.ids.for_each(&mut |_, socket| drop(sockets.add(&socket)));
        send_each(&sockets, &Array::of1(&JsString::from(socketio::PING)));
    }
}

/// How a reaction is answered: as native frames, or as a Socket.IO client's events in the
/// namespace it emitted in, with the ack it waits for.
pub(super) enum Answer {
    Native,
    SocketIo { namespace: Namespace, ack: Option<u64> },
}

impl Answer {
    /// Whether a plain acknowledgement (`[{}]`) is owed for an emit that neither posted nor failed.
    pub(super) fn ack_ok(&self) -> Option<(Namespace, u64)> {
        match self {
            Answer::SocketIo { namespace, ack: Some(id) } => Some((*namespace, *id)),
            _ => None,
        }
    }
}

impl ChatRoom {
    /// One Engine.IO packet from a Socket.IO socket.
    pub(super) fn socketio_message(&self, socket: WebSocket, id: &str, message: JsValue) {
        let packet = match message.dyn_ref::<JsString>() {
            Some(text) if text.length() as usize > socketio::MAX_PAYLOAD + 64 => {
                return self.socketio_refuse(&socket, None, ErrorCode::TooLong);
            }
            Some(_) => message.as_string().unwrap_or_default(),
            // Engine.IO sends attachments of binary events as binary frames.
            None => return self.socketio_refuse(&socket, None, ErrorCode::Unsupported),
        };
        match socketio::parse(&packet) {
            Inbound::Pong | Inbound::Noop | Inbound::Upgrade | Inbound::Ignored => {}
            Inbound::Ping(data) => send_raw(&socket, &JsString::from(format!("3{data}"))),
            Inbound::Close => {
                let _ = socket.close(Some(1000), Some("client closed"));
                self.depart(&socket);
            }
            Inbound::Malformed => {
                let _ = socket.close(Some(1002), Some("not an Engine.IO 4 packet"));
                self.depart(&socket);
            }
            Inbound::Connect(Err(name)) => send_raw(&socket, &JsString::from(socketio::unknown_namespace(&name))),
            Inbound::Connect(Ok(namespace)) => self.socketio_connect(&socket, id, namespace),
            Inbound::Disconnect(namespace) => {
                self.sio.joined[Namespace::ALL.iter().position(|n| *n == namespace).unwrap_or(0)].delete(socket.as_ref());
                self.socketio_attach(&socket);
            }
            Inbound::Binary { namespace, ack } => {
                if self.sio.namespaces_of(socket.as_ref()) & namespace.bit() != 0 {
                    self.answer(&socket, &Answer::SocketIo { namespace, ack }, &ServerFrame::error(ErrorCode::Unsupported));
                }
            }
            Inbound::Event { namespace, ack, frame } => {
                // As a Socket.IO server does, events in a namespace the client has not joined are dropped.
                if self.sio.namespaces_of(socket.as_ref()) & namespace.bit() == 0 {
                    return;
                }
                let answer = Answer::SocketIo { namespace, ack };
                // A frame that is not even an event still costs the sender a token, as a native bad frame does.
                let text = match &frame {
                    Ok(text) => text.as_str(),
                    Err(_) => "{",
                };
                self.load_history();
                let reaction = self.room.borrow_mut().receive(id, Incoming::Text(text), now_ms());
                let reaction = match (frame, reaction) {
                    (Err(code), Reaction::Reply(ServerFrame::Error { .. })) => Reaction::Reply(ServerFrame::error(code)),
                    (_, reaction) => reaction,
                };
                self.react(&socket, reaction, &answer);
            }
        }
    }

    /// An error for the socket's first joined namespace (a binary or oversized frame names none).
    fn socketio_refuse(&self, socket: &WebSocket, ack: Option<u64>, code: ErrorCode) {
        let joined = self.sio.namespaces_of(socket.as_ref());
        let namespace = Namespace::ALL.into_iter().find(|ns| joined & ns.bit() != 0).unwrap_or(Namespace::Root);
        self.answer(socket, &Answer::SocketIo { namespace, ack }, &ServerFrame::error(code));
    }

    /// Joins a namespace: the connect ack with the nick as `sid`, then the welcome (history as of
    /// now: frames still held are flushed first, so the socket gets only later ones).
    fn socketio_connect(&self, socket: &WebSocket, id: &str, namespace: Namespace) {
        let Ok(Some(attachment)) = socket.deserialize_attachment::<SocketAttachment>() else { return };
        let Some(state) = attachment.socketio else { return };
        if state.namespaces & namespace.bit() != 0 {
            return;
        }
        let connects = {
            let mut connects = self.sio.connects.borrow_mut();
            let count = connects.entry(id.to_owned()).or_default();
            *count += 1;
            *count
        };
        if connects > MAX_CONNECTS {
            let _ = socket.close(Some(close::POLICY_VIOLATION), Some("too many namespace connects"));
            self.depart(socket);
            return;
        }
        if !self.load_history() {
            send_raw(socket, &JsString::from(socketio::refusal("unavailable", ErrorCode::Unavailable.message())[0].clone()));
            return;
        }
        let window = Window::for_welcome(state.since);
        let mut history = match self.store.read(window) {
            Ok(history) => history,
            Err(error) => {
                worker::console_error!("edge-chat: reading history for a Socket.IO welcome failed: {error}");
                Vec::new()
            }
        };
        window.fit_budget(&mut history);
        self.flush();
        let room = self.room.borrow();
        let nick = attachment.member.nick.clone();
        let Some(you) = room.you(id) else { return };
        let users = room.nicks();
        let welcome = ServerFrame::Welcome { room: state.room.clone(), nick: nick.clone(), users: users.clone(), history, you };
        drop(room);
        let mut packets = vec![socketio::connect_ack(namespace, &nick)];
        packets.extend(socketio::welcome(namespace, &welcome.to_json(), &nick, &users));
        packets.iter().for_each(|packet| send_raw(socket, &JsString::from(packet.as_str())));
        self.sio.add(socket.as_ref(), id, state.namespaces | namespace.bit());
        self.socketio_attach(socket);
    }

    /// Saves the socket's joined namespaces in its attachment, for after hibernation.
    fn socketio_attach(&self, socket: &WebSocket) {
        let Ok(Some(mut attachment)) = socket.deserialize_attachment::<SocketAttachment>() else { return };
        if let Some(state) = attachment.socketio.as_mut() {
            state.namespaces = self.sio.namespaces_of(socket.as_ref());
        }
        attach(socket, &attachment);
    }

    /// The first packet of a Socket.IO socket: Engine.IO's open, with the heartbeat it keeps.
    pub(super) fn socketio_open(&self, socket: &WebSocket, id: &str) {
        send_raw(socket, &JsString::from(self.heartbeat.open_packet(id, false)));
        self.sio.add(socket.as_ref(), id, 0);
        self.arm_heartbeat();
    }

    /// Sets the alarm for the next ping round, unless this object already did.
    fn arm_heartbeat(&self) {
        if self.ping_armed.get() {
            return;
        }
        if let Some(at) = self.heartbeat.next_wake(self.sio.count(), now_ms()) {
            self.set_alarm(at);
            self.ping_armed.set(true);
        }
    }

    /// The alarm's Socket.IO duty: ping every Socket.IO socket and set the next round; false
    /// when the room holds none, and the alarm was for something else.
    pub(super) fn ping_round(&self) -> bool {
        self.ping_armed.set(false);
        if self.sio.count() == 0 {
            return false;
        }
        self.sio.ping_all();
        self.arm_heartbeat();
        true
    }

    /// After a Socket.IO socket left: with none left the heartbeat's alarm goes, unless the
    /// room's expiry has taken it over.
    pub(super) fn socketio_departed(&self, expiry_set: bool) {
        if self.sio.count() > 0 || expiry_set {
            return;
        }
        self.ping_armed.set(false);
        if let Err(error) = self.state.as_raw().storage().and_then(|storage| storage.delete_alarm(js_sys::Object::new())) {
            worker::console_error!("edge-chat: deleting the heartbeat alarm failed: {}", worker::Error::from(error));
        }
    }

    /// Answers a Socket.IO emit: a reply as an event in its namespace (an error as the ack when one
    /// is awaited).
    pub(super) fn answer_socketio(&self, socket: &WebSocket, namespace: Namespace, ack: Option<u64>, frame: &ServerFrame) {
        self.flush();
        let json = frame.to_json();
        let packet = match frame {
            ServerFrame::Error { code, .. } => socketio::refused(namespace, ack, &json, &socketio::code_name(*code)),
            _ => socketio::frame_event(namespace, &json),
        };
        send_raw(socket, &JsString::from(packet));
    }
}

/// A Socket.IO socket's attachment at the upgrade: no namespace joined yet.
pub(super) fn upgrade_state(room: &str, since: Option<u64>) -> SocketIoAttachment {
    SocketIoAttachment { room: room.to_owned(), since, namespaces: 0 }
}

/// A Socket.IO upgrade refused (ticket, budget, ban...): the client gets Engine.IO's open and a
/// CONNECT_ERROR carrying the code, which socket.io-client reports as `connect_error` and does not
/// retry, then the close code a native socket would get.
pub(crate) fn refused_socket(code: &str, message: &str, close_code: u16) -> Result<Response, RequestError> {
    let pair = WebSocketPair::new().map_err(internal("creating a WebSocket pair"))?;
    pair.server.accept().map_err(internal("accepting a refused socket"))?;
    let open = Heartbeat::default().open_packet("refused", false);
    for packet in std::iter::once(open).chain(socketio::refusal(code, message)) {
        pair.server.send_with_str(packet).map_err(internal("sending a refusal"))?;
    }
    pair.server.close(Some(close_code), Some(close::reply_reason(message))).map_err(internal("closing a refused socket"))?;
    Response::from_websocket(pair.client).map_err(internal("answering a refused upgrade"))
}
