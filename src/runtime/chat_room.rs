//! The Durable Object of one chat room: a thin shell around `room::Room`. It accepts sockets
//! with the WebSocket Hibernation API, so an idle room is evicted from memory while its
//! sockets stay open; the runtime constructs the object again on the next frame, and `new`
//! rebuilds the room from the sockets' attachments and the last stored message.
//!
//! Every event does the same three things: ask the room what to do, store what must be
//! stored, then send. Nothing here awaits, so events never interleave; the one exception is
//! the alarm, which deletes the storage of a room idle for `ROOM_TTL_DAYS`.
//!
//! Storage is touched lazily: the stored history's last id is read on the first join, post or
//! history read (and read again on the next one if it failed), and the table is created by
//! the first message, so that reading an unknown room's users or history writes nothing.
//!
//! The WebSocket handlers are bound by hand, as plain synchronous methods: the `worker`
//! macro would wrap every frame in a Rust future and a JS promise, which cost more CPU than
//! the room's own code (see BENCHMARKS.md). The sockets live in a JS `Map` (socket to id),
//! so finding a frame's sender and sending to every member are one call into JS each,
//! instead of a `getTags` array per frame and a WASM-to-JS crossing per socket.

use crate::chat::clients::ClientKey;
use crate::chat::close;
use crate::chat::history::{trim_cutoff, Window};
use crate::chat::protocol::{ChatMessage, ErrorCode, Incoming, ServerFrame, MAX_FRAME_BYTES};
use crate::chat::room::{Attachment, Reaction, Refusal, Room};
use crate::edge::config::RoomConfig;
use crate::runtime::message_store::MessageStore;
use crate::edge::routes::{RequestError, Route};
use crate::runtime::worker::{error_response, internal, json_response, ROUTE_HEADER};
use serde::Serialize;
use std::cell::RefCell;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{self, JsString, Map, Set};
use worker::worker_sys::web_sys;
use worker::worker_sys::WebSocketRequestResponsePair;
use worker::{durable_object, DurableObject, Env, Request, Response, State, WebSocket, WebSocketPair};

#[wasm_bindgen(inline_js = "
export function broadcast(members, frame, except) {
  for (const socket of members.keys()) {
    if (socket !== except) {
      try {
        socket.send(frame);
      } catch {
        // closing: its close event removes it from the room
      }
    }
  }
}
")]
extern "C" {
    /// Sends `frame` to every socket of `members` but `except` (undefined: to all).
    fn broadcast(members: &Map, frame: &JsString, except: &JsValue);
}

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen only for its `send(string)`, so that a frame crosses into JS once.
    type RawSocket;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send(this: &RawSocket, data: &JsString) -> Result<(), JsValue>;
}

#[durable_object(alarm)]
pub struct ChatRoom {
    state: State,
    store: MessageStore,
    room: RefCell<Room>,
    /// Every member's socket, to the id it was tagged with when it joined: exactly the
    /// room's members, kept in step with `room`.
    members: Map,
    /// Every socket the runtime holds for this room: members, and sockets the room closed
    /// that are still closing. They all count against `MAX_ROOM_SOCKETS`.
    sockets: Set,
    /// Random per construction and kept in memory only: client keys are hashed with it.
    salt: [u64; 2],
    idle_ttl_ms: u64,
    /// Random per construction: shows in `x-room-instance` (when enabled) when the object was rebuilt.
    instance: Option<String>,
}

impl DurableObject for ChatRoom {
    fn new(state: State, env: Env) -> Self {
        let (config, bad_vars) = RoomConfig::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
        for bad in bad_vars {
            worker::console_error!("edge-chat: {}={:?} is {}", bad.name, bad.value, bad.why);
        }
        let store = MessageStore::new(state.storage().sql());
        let mut room = Room::awaiting_history(config.limits);
        let (members, sockets) = (Map::new(), Set::new(&JsValue::UNDEFINED));
        let now = now_ms();
        for socket in open_sockets(&state) {
            sockets.add(socket.as_ref());
            let socket = WebSocket::from(socket);
            if let Ok(Some(attachment)) = socket.deserialize_attachment::<Attachment>() {
                let id = JsValue::from_str(&attachment.id);
                if room.restore(attachment, now) {
                    members.set(socket.as_ref(), &id);
                }
            }
        }
        match WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(error) => worker::console_error!("edge-chat: ping auto-response not set: {error:?}"),
        }
        let room = RefCell::new(room);
        let salt = [random_u64(), random_u64()];
        let instance = config.instance_header.then(random_id);
        ChatRoom { state, store, room, members, sockets, salt, idle_ttl_ms: config.idle_ttl_ms, instance }
    }

    async fn fetch(&self, request: Request) -> worker::Result<Response> {
        let route = request
            .headers()
            .get(ROUTE_HEADER)?
            .and_then(|json| serde_json::from_str::<Route>(&json).ok());
        let response = match route {
            Some(Route::Join { room, nick, since, client }) => self.join(&room, nick.as_deref(), since, &client),
            Some(Route::Users { room }) => self.users(&room),
            Some(Route::History { room, window }) => self.history(&room, window),
            Some(Route::Health) | None => Err(RequestError::NotFound),
        };
        let mut response = match response {
            Ok(response) => response,
            Err(error) => error_response(error)?,
        };
        if let Some(instance) = &self.instance {
            response.headers_mut().set("x-room-instance", instance)?;
        }
        Ok(response)
    }

    /// Set when the last member leaves (see `schedule_expiry`): a room that has had no
    /// socket since, and so no message, deletes everything it stored.
    async fn alarm(&self) -> worker::Result<Response> {
        if !self.room.borrow().is_empty() {
            // Somebody came back; the next time the room empties sets the alarm again.
            return Response::empty();
        }
        self.state.storage().delete_all().await?;
        self.store.forget_schema();
        self.room.borrow_mut().resume_history(0, 0);
        worker::console_log!("edge-chat: deleted the storage of a room idle for {} ms", self.idle_ttl_ms);
        Response::empty()
    }
}

/// The runtime's WebSocket events, synchronous: see the module's comment.
#[wasm_bindgen]
impl ChatRoom {
    #[wasm_bindgen(js_name = webSocketMessage)]
    pub fn websocket_message(&self, socket: web_sys::WebSocket, message: JsValue) {
        let Some(id) = self.member_id(&socket) else { return };
        // A JS string's length in UTF-16 units is at most its UTF-8 length: an oversized frame
        // is known as such without being copied into WASM memory.
        let text = match message.dyn_ref::<JsString>() {
            Some(text) if text.length() as usize > MAX_FRAME_BYTES => Err(()),
            Some(_) => Ok(message.as_string()),
            None => Ok(None),
        };
        let incoming = match &text {
            Err(()) => Incoming::Oversized,
            Ok(Some(text)) => Incoming::Text(text),
            Ok(None) => Incoming::Binary,
        };
        if !self.room.borrow().history_known() {
            self.load_history();
        }
        let reaction = self.room.borrow_mut().receive(&id, incoming, now_ms());
        let socket = WebSocket::from(socket);
        match reaction {
            Reaction::Nothing => {}
            Reaction::Reply(frame) => send_one(&socket, &frame),
            Reaction::Post(message) => self.post(&socket, message),
            Reaction::Renamed { frame, attachment } => {
                attach(&socket, &attachment);
                self.broadcast(&frame.to_json(), &JsValue::UNDEFINED);
            }
            Reaction::Kick { error, attachment, code, reason, left } => {
                send_one(&socket, &error);
                attach(&socket, &attachment);
                self.members.delete(socket.as_ref());
                if let Err(error) = socket.close(Some(code), Some(reason)) {
                    worker::console_error!("edge-chat: closing a flooding socket failed: {error}");
                }
                self.broadcast(&left.to_json(), &JsValue::UNDEFINED);
                self.schedule_expiry_if_empty();
            }
        }
    }

    #[wasm_bindgen(js_name = webSocketClose)]
    pub fn websocket_close(&self, socket: web_sys::WebSocket, code: usize, reason: String, _clean: bool) {
        let code = u16::try_from(code).unwrap_or(0);
        let socket = WebSocket::from(socket);
        // Completing the handshake fails harmlessly when the runtime already has.
        let _ = socket.close(Some(close::reply_code(code)), Some(close::reply_reason(&reason)));
        self.depart(&socket);
    }

    #[wasm_bindgen(js_name = webSocketError)]
    pub fn websocket_error(&self, socket: web_sys::WebSocket, error: JsValue) {
        worker::console_log!("edge-chat: socket error, removing it: {}", worker::Error::from(error));
        self.depart(&WebSocket::from(socket));
    }
}

/// Every socket the runtime holds for the object; none if it cannot say.
fn open_sockets(state: &State) -> Vec<web_sys::WebSocket> {
    state.as_raw().get_websockets().unwrap_or_else(|error| {
        worker::console_error!("edge-chat: listing the room's sockets failed: {}", worker::Error::from(error));
        Vec::new()
    })
}

impl ChatRoom {
    fn join(&self, room_name: &str, nick: Option<&str>, since: Option<u64>, client: &str) -> Result<Response, RequestError> {
        if !self.load_history() {
            return Err(RequestError::Unavailable);
        }
        if self.is_full() {
            return Err(RequestError::RoomFull);
        }
        let client = ClientKey::of(client, self.salt);
        let now = now_ms();
        let admitted = self.room.borrow_mut().admit(client, now);
        if let Err(refusal) = admitted {
            return self.refuse(refusal);
        }
        let window = Window::for_welcome(since);
        let mut history = self.store.read(window).map_err(internal("reading history"))?;
        window.fit_budget(&mut history);
        let id = random_id();
        let pair = self.accept(&id)?;
        let mut room = self.room.borrow_mut();
        let joined = room.join(id.clone(), client, nick, now, random_u64);
        attach(&pair.server, &joined.attachment);
        let welcome = ServerFrame::Welcome {
            room: room_name.to_owned(),
            nick: joined.attachment.nick.clone(),
            users: room.nicks(),
            history,
        };
        send_one(&pair.server, &welcome);
        if let Some(code) = joined.refused_nick {
            send_one(&pair.server, &ServerFrame::error(code));
        }
        self.broadcast(&joined.announcement.to_json(), pair.server.as_ref());
        self.members.set(pair.server.as_ref(), &JsValue::from_str(&id));
        Response::from_websocket(pair.client).map_err(internal("answering the upgrade"))
    }

    fn users(&self, room_name: &str) -> Result<Response, RequestError> {
        #[derive(Serialize)]
        struct Users<'a> {
            room: &'a str,
            users: Vec<String>,
            count: usize,
        }
        let users = self.room.borrow().nicks();
        let body = Users { room: room_name, count: users.len(), users };
        json_response(200, serde_json::to_string(&body).map_err(internal("encoding users"))?)
            .map_err(internal("answering users"))
    }

    fn history(&self, room_name: &str, window: Window) -> Result<Response, RequestError> {
        #[derive(Serialize)]
        struct History<'a> {
            room: &'a str,
            messages: Vec<ChatMessage>,
        }
        if !self.load_history() {
            return Err(RequestError::Unavailable);
        }
        let mut messages = self.store.read(window).map_err(internal("reading history"))?;
        window.fit_budget(&mut messages);
        let body = History { room: room_name, messages };
        json_response(200, serde_json::to_string(&body).map_err(internal("encoding history"))?)
            .map_err(internal("answering history"))
    }

    /// Stores the message, then broadcasts it. A message that could not be stored is not
    /// broadcast: its sender is told to send it again.
    fn post(&self, sender: &WebSocket, message: ChatMessage) {
        if let Err(error) = self.store.insert(&message) {
            worker::console_error!("edge-chat: storing message {} failed: {error}", message.id);
            send_one(sender, &ServerFrame::error(ErrorCode::Unavailable));
            return;
        }
        if let Some(cutoff) = trim_cutoff(message.id) {
            if let Err(error) = self.store.trim(cutoff) {
                worker::console_error!("edge-chat: trimming history failed: {error}");
            }
        }
        match serde_json::to_string(&message) {
            Ok(json) => self.broadcast(&json, &JsValue::UNDEFINED),
            Err(error) => worker::console_error!("edge-chat: encoding message {} failed: {error}", message.id),
        }
    }

    /// Whether the room holds as many sockets as it may. The count of sockets still closing
    /// is checked against the runtime's own list before a join is refused for it.
    fn is_full(&self) -> bool {
        if !self.room.borrow().is_full(self.sockets.size() as usize) {
            return false;
        }
        self.sockets.clear();
        for socket in open_sockets(&self.state) {
            self.sockets.add(socket.as_ref());
        }
        self.room.borrow().is_full(self.sockets.size() as usize)
    }

    /// A new server socket, accepted for hibernation and tagged with `id`. The runtime refuses
    /// sockets beyond its own limit per object; that is a full room, not a crash.
    fn accept(&self, id: &str) -> Result<WebSocketPair, RequestError> {
        let pair = WebSocketPair::new().map_err(internal("creating a WebSocket pair"))?;
        let server: &web_sys::WebSocket = pair.server.as_ref();
        if let Err(error) = self.state.as_raw().accept_websocket_with_tags(server, vec![JsValue::from_str(id)]) {
            worker::console_error!("edge-chat: the runtime refused a socket: {}", worker::Error::from(error));
            return Err(RequestError::RoomFull);
        }
        self.sockets.add(server);
        Ok(pair)
    }

    /// Accepts the socket only to tell it why it may not join and close it: a refused
    /// upgrade would look to a browser like a network failure worth retrying at once. It is
    /// accepted without hibernation: the runtime then completes the close by itself, at once,
    /// where a hibernatable socket closed before its upgrade is answered lingers until the
    /// object is evicted.
    fn refuse(&self, refusal: Refusal) -> Result<Response, RequestError> {
        let pair = WebSocketPair::new().map_err(internal("creating a WebSocket pair"))?;
        pair.server.accept().map_err(internal("accepting a refused socket"))?;
        send_one(&pair.server, &refusal.error);
        if let Err(error) = pair.server.close(Some(refusal.code), Some(refusal.reason)) {
            worker::console_error!("edge-chat: closing a refused socket failed: {error}");
        }
        Response::from_websocket(pair.client).map_err(internal("answering the upgrade"))
    }

    /// Reads where the stored history ends, unless the room knows already. False if storage
    /// cannot say: the caller answers `unavailable`, and the next event tries again.
    fn load_history(&self) -> bool {
        if self.room.borrow().history_known() {
            return true;
        }
        match self.store.last() {
            Ok((last_id, last_at)) => {
                self.room.borrow_mut().resume_history(last_id, last_at);
                true
            }
            Err(error) => {
                worker::console_error!("edge-chat: reading the last message failed: {error}");
                false
            }
        }
    }

    fn depart(&self, socket: &WebSocket) {
        self.sockets.delete(socket.as_ref());
        let Some(id) = self.member_id(socket.as_ref()) else { return };
        self.members.delete(socket.as_ref());
        let left = self.room.borrow_mut().leave(&id, now_ms());
        if let Some(left) = left {
            self.broadcast(&left.to_json(), &JsValue::UNDEFINED);
        }
        self.schedule_expiry_if_empty();
    }

    /// When the last member has left, sets the alarm that deletes the room's storage after
    /// `ROOM_TTL_DAYS` without sockets (and so without messages): one storage write per
    /// emptying, one wake per idle room. A room that never stored anything has nothing to delete.
    fn schedule_expiry_if_empty(&self) {
        let empty = self.room.borrow().is_empty();
        if !empty || !self.load_history() || !self.store.has_schema() {
            return;
        }
        let at = js_sys::Date::new(&JsValue::from_f64((now_ms() + self.idle_ttl_ms) as f64));
        let storage = self.state.as_raw().storage().and_then(|storage| storage.set_alarm(at, js_sys::Object::new()));
        if let Err(error) = storage {
            worker::console_error!("edge-chat: setting the expiry alarm failed: {}", worker::Error::from(error));
        }
    }

    /// Sends one frame to every member but `except`, crossing into JS once.
    fn broadcast(&self, json: &str, except: &JsValue) {
        broadcast(&self.members, &JsString::from(json), except);
    }

    /// The id of a member's socket; `None` for a socket that is not (or no longer) a member.
    fn member_id(&self, socket: &JsValue) -> Option<String> {
        self.members.get(socket).as_string()
    }
}

fn send_one(socket: &WebSocket, frame: &ServerFrame) {
    send_raw(socket, &JsString::from(frame.to_json()));
}

/// A failed send means the socket is closing; its close event removes it from the room.
fn send_raw(socket: &WebSocket, data: &JsString) {
    let raw: &RawSocket = AsRef::<worker::web_sys::WebSocket>::as_ref(socket).unchecked_ref();
    let _ = raw.send(data);
}

fn attach(socket: &WebSocket, attachment: &Attachment) {
    if let Err(error) = socket.serialize_attachment(attachment) {
        worker::console_error!("edge-chat: saving a socket attachment failed: {error}");
    }
}

/// `Date.now()`: `worker::Date::now` would build a JS `Date` object for every frame.
fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if let Err(error) = getrandom::getrandom(&mut bytes) {
        worker::console_error!("edge-chat: no randomness: {error}");
    }
    u64::from_le_bytes(bytes)
}

fn random_id() -> String {
    format!("{:016x}", random_u64())
}
