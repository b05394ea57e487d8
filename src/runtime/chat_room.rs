//! The Durable Object of one chat room: a thin shell around `room::Room`. It accepts sockets
//! with the WebSocket Hibernation API, so an idle room is evicted from memory while its
//! sockets stay open; the runtime constructs the object again on the next frame, and `new`
//! rebuilds the room from the sockets' attachments and the last stored message.
//!
//! Every event does the same three things: ask the room what to do, store what must be
//! stored, then send. Nothing here awaits, so events never interleave (the exceptions are
//! the alarm, which deletes the storage of a room idle for `ROOM_TTL_DAYS`, a Socket.IO
//! long-polling request, which awaits its body or its held answer, and an event stream's post,
//! which awaits its body; both read the room's state only after that). Broadcasts go through
//! the room's `Outbox`, which sends at once when the room is quiet and batches frames when it
//! falls behind; this object only runs the zero-delay timer it asks for (see `outbox`). While
//! the room is behind, a native socket's post is held and stored with the others at that timer,
//! one statement for the burst, before any of them is sent (see `held`); anything else the room
//! does first stores what is held.
//!
//! The room's one alarm serves every feature that needs a wake (`plan_alarm`): the idle check
//! while the room has native members (see `idle`: sockets silent for `IDLE_TIMEOUT_S` are
//! closed), the Socket.IO heartbeat while it has Socket.IO clients (see `socketio`), and the
//! expiry once it has none.
//!
//! Storage is touched lazily: where the stored history ends (and the room's bans, mutes, nick
//! reservations and slow mode) is read on the first join, frame or history read, and read
//! again on the next one if it failed; the tables are created by the first write, so that
//! reading an unknown room's users or history writes nothing.
//!
//! The WebSocket handlers are bound by hand, as plain synchronous methods: the `worker`
//! macro would wrap every frame in a Rust future and a JS promise, which cost more CPU than
//! the room's own code (see BENCHMARKS.md). The sockets live in a JS `Map` (socket to id),
//! so finding a frame's sender and sending to every member are one call into JS each,
//! instead of a `getTags` array per frame and a WASM-to-JS crossing per socket.

use crate::chat::clients::ClientKey;
use crate::chat::close;
use crate::chat::identity::Identity;
use crate::chat::idle::{Liveness, IDLE_CLOSE_CODE, IDLE_CLOSE_REASON};
use crate::chat::moderation::{address_key, Action, Sanction};
use crate::edge::config::RoomConfig;
use crate::chat::history::{Window, WELCOME_MAX};
use crate::chat::messages::Change;
use crate::chat::held::{Held, HeldPost, WithHeld};
use crate::chat::outbox::{offers_batch, Batch, BusyRooms, Delivery, Outbox, Personal, SocketAttachment, Step, BATCH_PROTOCOL};
use crate::runtime::message_store::MessageStore;
use crate::runtime::moderation_store::AuditEntry;
use crate::chat::protocol::{self, encode_post, ChatMessage, ErrorCode, Incoming, ServerFrame, MAX_FRAME_BYTES};
use crate::chat::room::{Attachment, Moderation, Reaction, Room};
use crate::edge::routes::{EngineRequest, Joining, RequestError, Route, Transport};
use crate::runtime::worker::{error_response, internal, json_response, refused_socket, PROTOCOL_HEADER, ROUTE_HEADER};
use crate::chat::sse;
use crate::chat::room::Refusal;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{self, Array, JsString, Map, Set};
use worker::worker_sys::web_sys;
use worker::worker_sys::WebSocketRequestResponsePair;
use worker::{durable_object, DurableObject, Env, Headers, Request, Response, ResponseBody, State, WebSocket, WebSocketPair};

#[wasm_bindgen(inline_js = "
export function broadcast(members, frame) {
  for (const socket of members.keys()) {
    try {
      socket.send(frame);
    } catch {
      // closing: its close event removes it from the room
    }
  }
}

export function deliver(members, batched, skip, frames, array) {
  for (const socket of members.keys()) {
    if (skip.has(socket)) continue;
    try {
      if (array !== undefined && batched.has(socket)) {
        socket.send(array);
      } else {
        for (const frame of frames) socket.send(frame);
      }
    } catch {
      // closing: its close event removes it from the room
    }
  }
}

const encoder = new TextEncoder();

// A stream whose reader has this many chunks waiting is too slow to keep: it is ended.
const MAX_QUEUED_CHUNKS = 1000;

export function open_stream(first, stub, gone_route) {
  let ended = false;
  const handle = {
    controller: undefined,
    // The stream's end reaches the object as a request of its own, handled like any other event.
    gone() {
      if (ended) return;
      ended = true;
      stub.fetch('https://room.internal/', { headers: { 'x-edge-chat-route': gone_route } }).catch(() => {});
    },
  };
  const body = new ReadableStream({
    start(controller) {
      handle.controller = controller;
      controller.enqueue(encoder.encode(first));
    },
    cancel() {
      handle.gone();
    },
  });
  return [body, handle];
}

export function send_streams(streams, text, skip) {
  const bytes = encoder.encode(text);
  for (const handle of streams.keys()) {
    if (handle === skip) continue;
    try {
      if (handle.controller.desiredSize < -MAX_QUEUED_CHUNKS) throw new Error('reader too slow');
      handle.controller.enqueue(bytes);
    } catch (error) {
      try {
        handle.controller.error(error);
      } catch {
        // already ended
      }
      handle.gone();
    }
  }
}

export function send_stream(handle, text) {
  send_streams(new Map([[handle, null]]), text, undefined);
}

export function end_stream(handle, last) {
  try {
    handle.controller.enqueue(encoder.encode(last));
    handle.controller.close();
  } catch {
    // the reader is gone already
  }
}

export function start_heartbeat(streams, text, ms) {
  return setInterval(() => send_streams(streams, text), ms);
}

export function stop_heartbeat(timer) {
  clearInterval(timer);
}

export function schedule(tick) {
  setTimeout(function run() {
    if (tick()) setTimeout(run, 0);
  }, 0);
}
")]
extern "C" {
    /// Sends `frame` to every socket of `members`.
    fn broadcast(members: &Map, frame: &JsString);
    /// Sends `array` (if not undefined) to every member in `batched`, and each of `frames` to
    /// every other member, skipping the members in `skip`.
    fn deliver(members: &Map, batched: &Set, skip: &Set, frames: &Array, array: &JsValue);
    /// A new event stream that starts with `first`; `[body, handle]`. When its reader goes
    /// away, the object is sent `gone_route` through `stub` (itself).
    fn open_stream(first: &JsString, stub: &JsValue, gone_route: &str) -> Array;
    /// Sends `text` to every stream of `streams` (handle to member id) but `skip` (a handle, or
    /// undefined), encoded once.
    fn send_streams(streams: &Map, text: &JsString, skip: &JsValue);
    /// Sends `text` to one stream.
    fn send_stream(handle: &JsValue, text: &JsString);
    /// Sends `last` to one stream and ends it.
    fn end_stream(handle: &JsValue, last: &JsString);
    /// Sends `text` to every stream every `ms`; the timer, for `stop_heartbeat`.
    fn start_heartbeat(streams: &Map, text: &JsString, ms: u32) -> JsValue;
    fn stop_heartbeat(timer: &JsValue);
    /// Runs `tick` after the events already queued (a zero-delay timer), and again for as long
    /// as it returns true.
    fn schedule(tick: &Closure<dyn FnMut() -> bool>);
}

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen only for its `send(string)`, so that a frame crosses into JS once.
    type RawSocket;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send(this: &RawSocket, data: &JsString) -> Result<(), JsValue>;

    /// The attachment crosses as text (`SocketAttachment::encode`): `worker`'s own (de)serialise
    /// it with serde_wasm_bindgen, which costs the module ~30 KB.
    #[wasm_bindgen(method, catch, js_name = serializeAttachment)]
    fn serialize_attachment(this: &RawSocket, text: &str) -> Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = deserializeAttachment)]
    fn deserialize_attachment(this: &RawSocket) -> Result<JsValue, JsValue>;

    /// The object's `DurableObjectState`, seen for what the `worker` crate does not bind.
    type RoomState;

    /// When the runtime last answered a `ping` from `socket` by itself (null if never), which it
    /// does without waking the room.
    #[wasm_bindgen(method, catch, js_name = getWebSocketAutoResponseTimestamp)]
    fn auto_response_timestamp(this: &RoomState, socket: &web_sys::WebSocket) -> Result<Option<js_sys::Date>, JsValue>;

    /// The runtime's CSPRNG, `crypto.getRandomValues`, which fills `bytes`. Bound here rather than
    /// through the getrandom crate, whose `js` backend also carries Node's `crypto` module (1.3 KB gzipped).
    #[wasm_bindgen(catch, js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(bytes: &mut [u8]) -> Result<(), JsValue>;
}

#[path = "socketio.rs"]
pub(crate) mod socketio;
use socketio::{Answer, Peer, SocketIoSockets};
use crate::chat::socketio::Heartbeat;

thread_local! {
    /// The rooms of this isolate in a busy spell: they share its event loop (see `outbox`).
    static BUSY_ROOMS: BusyRooms = BusyRooms::default();
}

#[durable_object(alarm)]
pub struct ChatRoom {
    state: State,
    store: Rc<MessageStore>,
    room: RefCell<Room>,
    /// The salt of this room's stored address keys (bans), read or made on first use.
    address_salt: RefCell<Option<String>>,
    wires: Wires,
    /// Posts from sockets waiting for the tick, which stores them together (see `held`).
    held: Rc<RefCell<Held<Sender>>>,
    /// Stores the held posts and sends what piled up in the outbox; run by the timer `schedule` sets.
    tick: Closure<dyn FnMut() -> bool>,
    /// Every socket the runtime holds for this room: members, and sockets the room closed
    /// that are still closing. They all count against `MAX_ROOM_SOCKETS`.
    sockets: Set,
    /// Random per construction and kept in memory only: client keys are hashed with it.
    client_salt: [u64; 2],
    idle_ttl_ms: u64,
    /// When each member last showed a sign of life: idle ones are closed.
    liveness: RefCell<Liveness>,
    /// Random per construction: shows in `x-room-instance` (when enabled) when the object was rebuilt.
    instance: Option<String>,
    heartbeat: Heartbeat,
    /// When the heartbeat's next ping round is planned; `None` while the room has no Socket.IO
    /// client, and after a wake (the alarm then pings, not knowing when the last round was).
    next_ping: Cell<Option<u64>>,
    /// Each stream's session token, to its member id.
    sessions: RefCell<HashMap<String, String>>,
    /// The streams' keep-alive timer, running while the room has streams.
    keepalive_timer: RefCell<Option<JsValue>>,
    max_streams: u32,
    keepalive_ms: u32,
    /// This object's own stub: a stream's end reaches the object through it.
    own_stub: Option<JsValue>,
}

impl DurableObject for ChatRoom {
    fn new(state: State, env: Env) -> Self {
        let (config, bad_vars) = RoomConfig::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
        for bad in bad_vars {
            worker::console_error!("edge-chat: {}={:?} is {}", bad.name, bad.value, bad.why);
        }
        let (heartbeat, bad_vars) = Heartbeat::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
        for bad in bad_vars {
            worker::console_error!("edge-chat: {}={:?} is {}", bad.name, bad.value, bad.why);
        }
        let store = Rc::new(MessageStore::new(state.storage().sql()));
        let sio = Rc::new(SocketIoSockets::default());
        let mut room = Room::awaiting_history(config.limits);
        let (members, batched, sockets) = (Map::new(), Set::new(&JsValue::UNDEFINED), Set::new(&JsValue::UNDEFINED));
        let mut liveness = Liveness::new(config.idle_timeout_ms);
        let open = open_sockets(&state);
        if !open.is_empty() {
            restore_sockets(open, &mut room, &sio, &mut liveness, (&members, &batched, &sockets));
        }
        let wires = Wires {
            members,
            batched,
            streams: Map::new(),
            sio,
            outbox: Rc::new(RefCell::new(Outbox::sharing(BUSY_ROOMS.with(BusyRooms::clone)))),
            newcomers: Rc::new(Newcomers::default()),
        };
        let held = Rc::new(RefCell::new(Held::default()));
        let tick = {
            let (wires, held, store) = (wires.clone(), held.clone(), store.clone());
            Closure::new(move || {
                let posts = held.borrow_mut().take();
                publish_held(&wires, &store, posts);
                let step = wires.outbox.borrow_mut().tick();
                // A tick that finds nothing ends the busy spell: nobody is a newcomer any more.
                if matches!(step, Step::Wait) {
                    wires.newcomers.clear();
                }
                wires.carry_out_step(step)
            })
        };
        match WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(error) => {
                worker::console_error!("edge-chat: ping auto-response not set: {}", worker::Error::from(error))
            }
        }
        let own_stub = env
            .durable_object("ROOMS")
            .and_then(|rooms| rooms.id_from_string(&state.id().to_string())?.get_stub())
            .map(|stub| stub.into_rpc::<JsValue>());
        if let Err(error) = &own_stub {
            worker::console_error!("edge-chat: no stub of the room itself, streams cannot end: {error}");
        }
        ChatRoom {
            state,
            store,
            room: RefCell::new(room),
            address_salt: RefCell::new(None),
            wires,
            held,
            tick,
            sockets,
            client_salt: [random_u64(), random_u64()],
            idle_ttl_ms: config.idle_ttl_ms,
            liveness: RefCell::new(liveness),
            instance: config.instance_header.then(random_id),
            heartbeat,
            next_ping: Cell::new(None),
            sessions: RefCell::new(HashMap::new()),
            keepalive_timer: RefCell::new(None),
            max_streams: config.max_streams,
            keepalive_ms: config.keepalive_ms,
            own_stub: own_stub.ok(),
        }
    }

    async fn fetch(&self, mut request: Request) -> worker::Result<Response> {
        // Joins and reads see the held posts in storage, and every frame follows theirs.
        self.store_held();
        let route = request
            .headers()
            .get(ROUTE_HEADER)?
            .and_then(|hop| Route::from_hop(&hop));
        let batch = offers_batch(request.headers().get(PROTOCOL_HEADER)?.as_deref());
        // Each route's handler stays out of line (boxed when it awaits): V8 compiles a function on its
        // first call, so a cold start's first join compiles the join and not every other route.
        let response = match route {
            Some(Route::Join { socketio: Some(EngineRequest { sid: Some(sid), transport, post }), .. }) => {
                Box::pin(self.socketio_session(&sid, transport, post, request)).await
            }
            Some(Route::Join { joining, socketio }) => {
                let (room, since, after) = (&joining.room, joining.since, joining.after);
                let socketio = socketio.map(|engine| (socketio::upgrade_state(room, since, after), engine.transport));
                self.join(joining, batch, socketio)
            }
            Some(Route::Events { joining }) => self.open_stream(joining),
            Some(Route::Post { .. }) => {
                let session = request.headers().get(sse::SESSION_HEADER)?;
                let frame = request.text().await?;
                self.post_from_stream(session.as_deref(), &frame)
            }
            Some(Route::StreamGone { stream }) => {
                self.stream_gone(&stream);
                Response::empty().map_err(internal("answering a stream's end"))
            }
            Some(Route::Users { room }) => self.users(&room),
            Some(Route::History { room, window }) => self.history(&room, window),
            Some(Route::Moderate { action, .. }) => self.moderate_as_admin(action),
            Some(Route::Bans { room }) => self.bans(&room),
            Some(Route::Audit { room }) => self.audit_trail(&room),
            Some(Route::Health | Route::AdminAction { .. } | Route::Preflight) | None => Err(RequestError::NotFound),
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

    /// Runs every feature whose time has come (see `plan_alarm`): the Socket.IO heartbeat's ping
    /// round, and while the room has members the idle check, which closes the sockets silent for
    /// too long; then asks for the next wake. Once it has none, the expiry: a room that has had
    /// no socket since, and so no message, deletes everything it stored.
    async fn alarm(&self) -> worker::Result<Response> {
        self.store_held();
        let now = now_ms();
        self.ping_round(now);
        if !self.room.borrow().is_empty() {
            self.sweep_if_due(now);
            // A sweep that emptied the room planned its expiry already.
            if !self.room.borrow().is_empty() {
                self.plan_alarm(now);
            }
            return Response::empty();
        }
        // Empty: the expiry, if the time it recorded has come. An idle check's alarm can still
        // find the room empty when its members went without a close event (a restart): then
        // the expiry is planned from now, never taken from an older emptying.
        if !self.load_history() {
            // Storage cannot say what the room holds: the runtime retries a failed alarm.
            return Err(worker::Error::RustError("the room's storage is unavailable".into()));
        }
        let recorded = match self.store.setting(EXPIRES_AT) {
            Ok(at) => at.and_then(|at| at.parse::<u64>().ok()).filter(|&at| at > 0),
            Err(error) => {
                worker::console_error!("edge-chat: reading when the room expires failed: {error}");
                return Response::empty();
            }
        };
        match recorded {
            Some(at) if at <= now => {}
            Some(at) => {
                self.set_alarm(at);
                return Response::empty();
            }
            None => {
                self.plan_alarm(now);
                return Response::empty();
            }
        }
        self.state.storage().delete_all().await?;
        self.store.forget_schema();
        *self.address_salt.borrow_mut() = None;
        // Everything the room restored from storage goes with it; times still never go back.
        let mut room = self.room.borrow_mut();
        *room = Room::new(room.limits().clone(), 0, room.last_message().1);
        worker::console_log!("edge-chat: deleted the storage of a room idle for {} ms", self.idle_ttl_ms);
        Response::empty()
    }
}

/// The runtime's WebSocket events, synchronous: see the module's comment.
#[wasm_bindgen]
impl ChatRoom {
    #[wasm_bindgen(js_name = webSocketMessage)]
    pub fn websocket_message(&self, socket: web_sys::WebSocket, message: JsValue) {
        if let Some(id) = self.wires.sio.id_of(&socket) {
            // Socket.IO posts are stored at once, after the held ones (see `held`).
            self.store_held();
            return self.socketio_message(WebSocket::from(socket), &id, message);
        }
        if let Some(sid) = self.wires.sio.probe_of(&socket) {
            return self.socketio_probe(WebSocket::from(socket), &sid, message);
        }
        let Some(id) = self.member_id(&socket) else { return };
        let now = now_ms();
        let record_frame = self.liveness.borrow_mut().frame(&id, now);
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
        self.load_history();
        let socket = WebSocket::from(socket);
        match incoming {
            Incoming::Text(text) if text.starts_with('[') && self.wires.batched.has(socket.as_ref()) => {
                match protocol::split_array(text) {
                    Ok(items) => self.receive_array(&id, &socket, &items, now),
                    Err(code) => self.receive_one(&id, &socket, Incoming::BadArray(code), now),
                }
            }
            incoming => self.receive_one(&id, &socket, incoming, now),
        }
        if record_frame {
            // Still a member: its attachment records the frame, for after a hibernation.
            let attachment = self.room.borrow().attachment(&id);
            if let Some(member) = attachment {
                self.attach(&socket, member);
            }
        }
        self.sweep_if_due(now);
    }

    #[wasm_bindgen(js_name = webSocketClose)]
    pub fn websocket_close(&self, socket: web_sys::WebSocket, code: usize, reason: String, _clean: bool) {
        let code = u16::try_from(code).unwrap_or(0);
        let socket = WebSocket::from(socket);
        // Completing the handshake fails harmlessly when the runtime already has.
        let _ = socket.close(Some(close::reply_code(code)), Some(close::reply_reason(&reason)));
        self.depart(&socket);
        self.sweep_if_due(now_ms());
    }

    #[wasm_bindgen(js_name = webSocketError)]
    pub fn websocket_error(&self, socket: web_sys::WebSocket, error: JsValue) {
        worker::console_log!("edge-chat: socket error, removing it: {}", worker::Error::from(error));
        self.depart(&WebSocket::from(socket));
    }
}

/// Takes back the sockets the runtime kept while the object hibernated: `sockets` gets them all,
/// `members` (and `batched`) the native members. Out of line: a new room has none, and V8 compiles a
/// WASM function only when it is first called.
#[inline(never)]
fn restore_sockets(
    open: Vec<web_sys::WebSocket>,
    room: &mut Room,
    sio: &SocketIoSockets,
    liveness: &mut Liveness,
    (members, batched, sockets): (&Map, &Set, &Set),
) {
    let now = now_ms();
    for socket in open {
        sockets.add(socket.as_ref());
        let socket = WebSocket::from(socket);
        if let Some(SocketAttachment { member, batch, seen, socketio }) = attachment(&socket) {
            let id = member.id.clone();
            if !room.restore(member, now) {
                continue;
            }
            // Socket.IO clients answer the room's Engine.IO pings: the idle sweep leaves them out.
            if let Some(state) = socketio {
                sio.add(socket.as_ref(), &id, state.namespaces);
                continue;
            }
            liveness.restored(&id, seen, now);
            members.set(socket.as_ref(), &JsValue::from_str(&id));
            if batch {
                batched.add(socket.as_ref());
            }
        }
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
    fn decide(&self, id: &str, incoming: Incoming<'_>, now: u64) -> Reaction {
        let held = self.held.borrow();
        let history = WithHeld { history: &*self.store, held: &held };
        self.room.borrow_mut().receive(id, incoming, now, &history)
    }

    fn receive_one(&self, id: &str, socket: &WebSocket, incoming: Incoming<'_>, now: u64) {
        self.carry_out_from_socket(id, socket, self.decide(id, incoming, now), Self::post_from_socket);
    }

    /// The items of an array frame, in order, each as if it had come alone; its messages are held,
    /// then stored with one statement and sent together (see `held`).
    fn receive_array(&self, id: &str, socket: &WebSocket, items: &[serde_json::Value], now: u64) {
        for item in items {
            self.carry_out_from_socket(id, socket, self.decide(id, Incoming::Item(item), now), Self::hold);
        }
        if self.held.borrow().is_empty() {
            return;
        }
        // A quiet room sends them now, as one batch, and starts a busy spell as a single post would;
        // while the isolate is behind, they wait for the tick like a single post.
        let behind = self.wires.outbox.borrow().isolate_behind();
        let quiet = self.wires.outbox.borrow_mut().begin_spell();
        if quiet {
            if !behind {
                self.flush();
            }
            schedule(&self.tick);
        }
    }

    /// Carries out what the room decided about a native socket's frame; a post goes to `post`.
    fn carry_out_from_socket(&self, id: &str, socket: &WebSocket, reaction: Reaction, post: fn(&Self, HeldPost<Sender>)) {
        match reaction {
            Reaction::Post { message, sender, cid } => {
                let from = Sender { id: id.to_owned(), socket: socket.clone() };
                post(self, HeldPost { message, sender, cid, from });
            }
            reaction => self.react(Peer::Socket(socket), reaction, &Answer::Native),
        }
    }

    /// Holds `post` for the tick, storing what is held at once when a batch's worth is waiting.
    fn hold(&self, post: HeldPost<Sender>) {
        let full = self.held.borrow_mut().hold(post);
        if full {
            self.store_held();
        }
    }

    /// A native socket's message goes through the outbox, its own copy batched with the rest; while
    /// the room is busy, or the isolate behind, it is held, to be stored with the others (see `held`).
    fn post_from_socket(&self, post: HeldPost<Sender>) {
        let (busy, behind) = {
            let outbox = self.wires.outbox.borrow();
            (outbox.is_busy(), outbox.isolate_behind())
        };
        if busy {
            self.hold(post);
        } else if behind {
            self.wires.outbox.borrow_mut().begin_spell();
            self.hold(post);
            schedule(&self.tick);
        } else if publish_held(&self.wires, &self.store, vec![post]) {
            schedule(&self.tick);
        }
    }

    /// Carries out what the room decided about a frame from `peer`, answering it natively or as
    /// Socket.IO events. A native socket's post goes to `post_from_socket` instead.
    fn react(&self, peer: Peer<'_>, reaction: Reaction, answer: &Answer) {
        // It comes after the held posts, and may read or change them.
        self.store_held();
        match reaction {
            Reaction::Nothing => {}
            Reaction::Reply(frame) => self.answer(peer, answer, &frame),
            Reaction::Post { message, sender, cid } => {
                if !self.post(peer, message, &sender, cid, answer) {
                    self.answer(peer, answer, &ServerFrame::error(ErrorCode::Unavailable));
                }
            }
            Reaction::Resend(message) => self.resend(peer, &message, answer),
            Reaction::Change(change) => {
                let id = change.id();
                match self.change(change) {
                    // An emit waiting for an ack gets the message's id.
                    Ok(()) => self.acknowledge(peer, answer, &format!(r#"{{"id":{id}}}"#)),
                    Err(code) => self.answer(peer, answer, &ServerFrame::error(code)),
                }
            }
            Reaction::Typing(frame) => {
                self.broadcast_except(peer, &frame.to_json());
                self.acknowledge(peer, answer, "{}");
            }
            Reaction::Moderate(moderation) => match self.enforce(moderation) {
                Err(code) => self.answer(peer, answer, &ServerFrame::error(code)),
                Ok(_) => self.acknowledge(peer, answer, "{}"),
            },
            Reaction::Renamed { frame, attachment } => {
                match peer {
                    Peer::Socket(socket) => self.attach(socket, attachment),
                    Peer::Session(sid) => self.wires.sio.rename_session(sid, attachment),
                    // A stream's post is carried out by `post_from_stream`.
                    Peer::Stream(_) => {}
                }
                self.broadcast(frame.to_json());
                self.acknowledge(peer, answer, "{}");
            }
            Reaction::Kick { error, attachment, code, reason, left } => {
                self.answer(peer, answer, &error);
                self.socketio_goodbye(peer);
                let was_socketio = match peer {
                    Peer::Socket(socket) => {
                        self.attach(socket, attachment);
                        self.wires.members.delete(socket.as_ref());
                        self.wires.batched.delete(socket.as_ref());
                        let was_socketio = self.wires.sio.remove(socket.as_ref());
                        if let Err(error) = socket.close(Some(code), Some(reason)) {
                            worker::console_error!("edge-chat: closing a socket ({code}) failed: {error}");
                        }
                        was_socketio
                    }
                    Peer::Session(sid) => self.wires.sio.end_session(sid),
                    Peer::Stream(_) => false,
                };
                if let Some(left) = left {
                    self.broadcast(left.to_json());
                }
                self.schedule_expiry_if_empty();
                if was_socketio {
                    self.socketio_departed();
                }
            }
        }
    }

    fn answer(&self, peer: Peer<'_>, answer: &Answer, frame: &ServerFrame) {
        match (answer, peer) {
            (Answer::Native, Peer::Socket(socket)) => self.reply(socket, frame),
            (Answer::SocketIo { namespace, ack }, peer) => self.answer_socketio(peer, *namespace, *ack, frame),
            (Answer::Native, Peer::Session(_) | Peer::Stream(_)) => {}
        }
    }

    /// Answers an emit that waits for an ack; native frames have none.
    fn acknowledge(&self, peer: Peer<'_>, answer: &Answer, payload: &str) {
        if let Some((namespace, id)) = answer.ack_ok() {
            self.socketio_send(peer, crate::chat::socketio::ack(namespace, id, payload));
        }
    }

    /// Whether a resuming socket or stream may hold messages a moderator's clear has removed since.
    /// Only a resume can have: a first join reads no setting for it.
    fn missed_clear(&self, window: Window) -> Result<bool, RequestError> {
        if matches!(window, Window::Latest { .. }) {
            return Ok(false);
        }
        Ok(window.missed_clear(self.store.last_clear().map_err(internal("reading the last clear"))?))
    }

    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn join(
        &self,
        joining: Joining,
        batch: bool,
        socketio: Option<(crate::chat::socketio::SocketIoAttachment, Transport)>,
    ) -> Result<Response, RequestError> {
        let Joining { room: room_name, nick, since, after, client_id, client, identity } = joining;
        let (nick, window) = (nick.as_deref(), Window::for_welcome(since, after));
        if !self.load_history() {
            return Err(RequestError::Unavailable);
        }
        if self.is_full() {
            return Err(RequestError::RoomFull);
        }
        let (client_key, address) = self.newcomer_keys(&client, identity.as_ref())?;
        let now = now_ms();
        let first = self.room.borrow().is_empty();
        let admitted = self.room.borrow_mut().admit(client_key, identity.as_ref(), address.as_deref(), now);
        if let Err(refusal) = admitted {
            if let Some((_, transport)) = socketio {
                return socketio::refused(&refusal, transport);
            }
            return refused_socket(&refusal.error.to_json(), refusal.code, refusal.reason, batch);
        }
        if let Some((state, transport)) = socketio {
            return self.socketio_join(state, transport, client_key, nick, identity, address, client_id, first, now);
        }
        let mut history = self.store.read(window).map_err(internal("reading history"))?;
        window.fit_budget(&mut history);
        let cleared = self.missed_clear(window)?;
        let id = random_id();
        let pair = self.accept(&id)?;
        let mut room = self.room.borrow_mut();
        let joined = room.join(id.clone(), client_key, nick, identity, address, client_id, now, random_u64);
        if let Some(reservation) = &joined.reservation {
            // The nick still belongs to its identity while the room is awake; only a later
            // wake would forget the reservation.
            if let Err(error) = self.store.reserve(reservation) {
                worker::console_error!("edge-chat: storing a nick reservation failed: {error}");
            }
        }
        attach(&pair.server, &SocketAttachment { member: joined.attachment.clone(), batch, seen: now, socketio: None });
        self.liveness.borrow_mut().joined(&id, now);
        let welcome = ServerFrame::Welcome {
            room: room_name,
            nick: joined.attachment.nick.clone(),
            users: room.nicks(),
            history,
            you: joined.you,
            seq: room.last_seq(),
            cleared,
        };
        drop(room);
        send_one(&pair.server, &welcome);
        if let Some(code) = joined.refused_nick {
            send_one(&pair.server, &ServerFrame::error(code));
        }
        // Frames held now are older than the welcome: the newcomer must not get them.
        let announcement = match &joined.announcement {
            Some(announcement) => Some(announcement.to_json()),
            None => {
                self.flush();
                None
            }
        };
        self.wires.members.set(pair.server.as_ref(), &JsValue::from_str(&id));
        if batch {
            self.wires.batched.add(pair.server.as_ref());
        }
        if let Some(announcement) = announcement {
            // A newcomer until the next delivery, which skips what was held before it joined.
            self.wires.newcomers.add(pair.server.as_ref());
            let step = self.wires.outbox.borrow_mut().join(announcement);
            self.carry_out(step);
        }
        if first {
            self.keep(now);
        } else if self.wires.members.size() == 1 {
            // The first native member of a room of Socket.IO clients: the idle check starts.
            self.plan_alarm(now);
        }
        self.sweep_if_due(now);
        let mut response = Response::from_websocket(pair.client).map_err(internal("answering the upgrade"))?;
        if batch {
            response.headers_mut().set(PROTOCOL_HEADER, BATCH_PROTOCOL).map_err(internal("answering the subprotocol"))?;
        }
        Ok(response)
    }

    /// The room's first member joined: it no longer expires (see `alarm`), and the features it
    /// brings need the alarm from now on.
    fn keep(&self, now: u64) {
        if self.store.has_schema() {
            if let Err(error) = self.store.set_setting(EXPIRES_AT, "0") {
                worker::console_error!("edge-chat: clearing the room's expiry failed: {error}");
            }
        }
        self.plan_alarm(now);
    }

    /// The keys a newcomer's budgets and bans go by. A ticketed user's sockets share one budget
    /// wherever they connect from; anonymous ones are known by their address.
    fn newcomer_keys(&self, client: &str, identity: Option<&Identity>) -> Result<(ClientKey, Option<String>), RequestError> {
        let client_key = match identity {
            Some(user) => ClientKey::of(&format!("user:{}", user.id), self.client_salt),
            None => ClientKey::of(client, self.client_salt),
        };
        let address = match client {
            "" => None,
            ip => Some(address_key(self.address_salt()?.as_bytes(), ip)),
        };
        Ok((client_key, address))
    }

    /// Opens an event stream into the room: a member like a socket, admitted by the same rules,
    /// that lives in memory only. It starts at once with its session event and its welcome.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn open_stream(&self, joining: Joining) -> Result<Response, RequestError> {
        let Joining { room: room_name, nick, since, after, client_id, client, identity } = joining;
        let (nick, window) = (nick.as_deref(), Window::for_welcome(since, after));
        if !self.load_history() {
            return Err(RequestError::Unavailable);
        }
        if self.wires.streams.size() >= self.max_streams {
            return Err(RequestError::TooManyStreams);
        }
        if self.is_full() {
            return Err(RequestError::RoomFull);
        }
        let Some(own_stub) = &self.own_stub else { return Err(RequestError::Unavailable) };
        let (client_key, address) = self.newcomer_keys(&client, identity.as_ref())?;
        let now = now_ms();
        let was_empty = self.room.borrow().is_empty();
        let admitted = self.room.borrow_mut().admit(client_key, identity.as_ref(), address.as_deref(), now);
        if let Err(Refusal { error, .. }) = admitted {
            let code = match error {
                ServerFrame::Error { code, .. } => code,
                _ => ErrorCode::Forbidden,
            };
            return json_response(sse::status_of(code), sse::error_body(code)).map_err(internal("refusing a stream"));
        }
        let mut history = self.store.read(window).map_err(internal("reading history"))?;
        let read = history.len();
        window.fit_budget(&mut history);
        // The welcome's `id:` is the seq a reconnect resumes after: the room's latest, unless
        // the welcome could not hold every change asked for (a full page, or over the byte
        // budget), when it is the latest change it holds and the rest comes on the reconnect.
        let cut = matches!(window, Window::After { .. } | Window::Changed { .. })
            && (read >= WELCOME_MAX as usize || history.len() < read);
        let cleared = self.missed_clear(window)?;
        let (id, token) = (random_id(), format!("{}{}", random_id(), random_id()));
        let gone_route = Route::StreamGone { stream: id.clone() }.to_hop();
        let (first, announcement) = {
            let mut room = self.room.borrow_mut();
            let joined = room.join(id.clone(), client_key, nick, identity, address, client_id, now, random_u64);
            if let Some(reservation) = &joined.reservation {
                if let Err(error) = self.store.reserve(reservation) {
                    worker::console_error!("edge-chat: storing a nick reservation failed: {error}");
                }
            }
            let nick = joined.attachment.nick;
            let mut first = sse::session_event(&token, &nick);
            let seq = room.last_seq();
            let position = if cut { history.iter().map(|message| message.seq).max() } else { Some(seq) };
            let users = room.nicks();
            let welcome =
                ServerFrame::Welcome { room: room_name, nick, users, history, you: joined.you, seq, cleared };
            first.push_str(&sse::event_at(&welcome.to_json(), position));
            if let Some(code) = joined.refused_nick {
                first.push_str(&sse::event(&ServerFrame::error(code).to_json()));
            }
            (first, joined.announcement)
        };
        // What the room holds is older than this stream's welcome, and its `joined` is for the others.
        self.flush();
        if let Some(announcement) = announcement {
            self.broadcast(announcement.to_json());
        }
        let opened = open_stream(&JsString::from(first), own_stub, &gone_route);
        let (body, handle) = (opened.get(0), opened.get(1));
        self.wires.streams.set(&handle, &JsValue::from_str(&id));
        self.sessions.borrow_mut().insert(token, id);
        // A stream that is the room's first member stops its expiry, as a socket does.
        if was_empty {
            self.keep(now);
        }
        if self.keepalive_timer.borrow().is_none() {
            let timer = start_heartbeat(&self.wires.streams, &JsString::from(sse::KEEPALIVE), self.keepalive_ms);
            *self.keepalive_timer.borrow_mut() = Some(timer);
        }
        let headers = worker::Headers::new();
        headers.set("content-type", "text/event-stream; charset=utf-8").map_err(internal("answering a stream"))?;
        headers.set("cache-control", "no-store").map_err(internal("answering a stream"))?;
        let body = ResponseBody::Stream(body.unchecked_into());
        Ok(Response::from_body(body).map_err(internal("answering a stream"))?.with_headers(headers))
    }

    /// A post by an event stream's user, named by its session token: handled as the frame its
    /// body stands for (see `sse::post_frame`), by the same rules as a socket's. The answer says
    /// what a socket would have been sent: the id of the message posted (201), or of the one a
    /// duplicate `cid` posted already (200); the id and seq of a change; 204 for typing.
    #[inline(never)]
    fn post_from_stream(&self, session: Option<&str>, frame: &str) -> Result<Response, RequestError> {
        let id = session.and_then(|token| self.sessions.borrow().get(token).cloned()).ok_or(RequestError::BadSession)?;
        if !self.load_history() {
            return Err(RequestError::Unavailable);
        }
        let refused = |code| json_response(sse::status_of(code), sse::error_body(code)).map_err(internal("refusing a post"));
        let answer = |status, body: String| json_response(status, body).map_err(internal("answering a post"));
        let no_content = || Response::empty().map(|response| response.with_status(204)).map_err(internal("answering a post"));
        let reaction = self.room.borrow_mut().receive(&id, Incoming::Text(frame), now_ms(), &*self.store);
        let sender = Peer::Stream(&id);
        match reaction {
            // A typing frame over its own limit is dropped silently, as a socket's is.
            Reaction::Nothing if self.room.borrow().attachment(&id).is_some() => no_content(),
            Reaction::Nothing => Err(RequestError::BadSession),
            Reaction::Reply(ServerFrame::Error { code, .. }) => refused(code),
            Reaction::Reply(_) => refused(ErrorCode::BadType),
            // A moderator's delete (the one moderation frame a post passes through).
            Reaction::Moderate(moderation) => match self.enforce(moderation) {
                Ok(notice) => answer(200, format!(r#"{{"ok":true,"moderated":{}}}"#, notice.to_json())),
                Err(code) => refused(code),
            },
            Reaction::Post { message, sender: sender_key, cid } => {
                let id = message.id;
                if !self.post(sender, message, &sender_key, cid, &Answer::Native) {
                    return refused(ErrorCode::Unavailable);
                }
                answer(201, format!(r#"{{"id":{id}}}"#))
            }
            Reaction::Resend(message) => {
                // As a socket would, the stream gets the original again with its `cid`; without an
                // `id:`, since its seq may be older than where the stream is.
                match serde_json::to_string(&message) {
                    Ok(json) => self.send_to(sender, &Answer::Native, json, None),
                    Err(error) => worker::console_error!("edge-chat: encoding message {} failed: {error}", message.id),
                }
                answer(200, format!(r#"{{"id":{}}}"#, message.id))
            }
            Reaction::Change(change) => {
                let (id, seq) = (change.id(), change.seq());
                match self.change(change) {
                    Ok(()) => answer(200, format!(r#"{{"id":{id},"seq":{seq}}}"#)),
                    Err(code) => refused(code),
                }
            }
            Reaction::Typing(frame) => {
                self.broadcast_except(sender, &frame.to_json());
                no_content()
            }
            Reaction::Renamed { frame, .. } => {
                let ServerFrame::Renamed { to, .. } = &frame else { return Err(RequestError::Internal) };
                let body = protocol::json_text(&serde_json::json!({ "nick": to }));
                self.broadcast(frame.to_json());
                answer(200, body)
            }
            Reaction::Kick { error, code, reason, left, .. } => {
                let ServerFrame::Error { code: error_code, .. } = error else { return Err(RequestError::Internal) };
                self.end_stream(&id, Some(&error), code, reason);
                if let Some(left) = left {
                    self.broadcast(left.to_json());
                }
                self.schedule_expiry_if_empty();
                refused(error_code)
            }
        }
    }

    /// The handle of member `id`'s event stream, if it has one.
    fn stream_of(&self, id: &str) -> Option<JsValue> {
        let mut found = None;
        self.wires.streams.for_each(&mut |value, key| {
            if found.is_none() && value.as_string().as_deref() == Some(id) {
                found = Some(key);
            }
        });
        found
    }

    /// Ends member `id`'s stream from the room's side (it stays a member until the caller says
    /// otherwise): an `error` event if given, then a `close` event with the code and reason a
    /// socket would have been closed with.
    fn end_stream(&self, id: &str, error: Option<&ServerFrame>, code: u16, reason: &str) -> bool {
        let Some(handle) = self.stream_of(id) else { return false };
        self.forget_stream(&handle, id);
        self.flush();
        let mut last = error.map(|error| sse::event(&error.to_json())).unwrap_or_default();
        last.push_str(&sse::close_event(code, reason));
        end_stream(&handle, &JsString::from(last));
        true
    }

    fn forget_stream(&self, handle: &JsValue, id: &str) {
        self.wires.streams.delete(handle);
        self.sessions.borrow_mut().retain(|_, member| member != id);
        if self.wires.streams.size() == 0 {
            if let Some(timer) = self.keepalive_timer.borrow_mut().take() {
                stop_heartbeat(&timer);
            }
        }
    }

    /// An event stream's reader went away: its member leaves, once.
    #[inline(never)]
    fn stream_gone(&self, id: &str) {
        let Some(handle) = self.stream_of(id) else { return };
        self.forget_stream(&handle, id);
        let left = self.room.borrow_mut().leave(id, now_ms());
        if let Some(left) = left {
            self.broadcast(left.to_json());
        }
        self.schedule_expiry_if_empty();
    }

    #[inline(never)]
    fn users(&self, room_name: &str) -> Result<Response, RequestError> {
        #[derive(Serialize)]
        struct Users<'a> {
            room: &'a str,
            users: Vec<String>,
            count: usize,
        }
        self.sweep_if_due(now_ms());
        let users = self.room.borrow().nicks();
        let body = Users { room: room_name, count: users.len(), users };
        json_response(200, serde_json::to_string(&body).map_err(internal("encoding users"))?)
            .map_err(internal("answering users"))
    }

    #[inline(never)]
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

    /// The salt for address keys: stored with the room, made on the first join that needs it.
    fn address_salt(&self) -> Result<String, RequestError> {
        if let Some(salt) = self.address_salt.borrow().as_ref() {
            return Ok(salt.clone());
        }
        let salt = match self.store.setting(ADDRESS_SALT).map_err(internal("reading the address salt"))? {
            Some(salt) => salt,
            None => {
                let salt = format!("{}{}", random_id(), random_id());
                self.store.set_setting(ADDRESS_SALT, &salt).map_err(internal("storing the address salt"))?;
                salt
            }
        };
        *self.address_salt.borrow_mut() = Some(salt.clone());
        Ok(salt)
    }

    #[inline(never)]
    fn moderate_as_admin(&self, action: Action) -> Result<Response, RequestError> {
        if !self.load_history() {
            return Err(RequestError::Unavailable);
        }
        let not_found = |code| match code {
            ErrorCode::NotFound => RequestError::NoSuchTarget,
            _ => RequestError::Internal,
        };
        let moderation =
            self.room.borrow_mut().moderate(action, ADMIN.to_owned(), None, now_ms(), &*self.store).map_err(not_found)?;
        let notice = self.enforce(moderation).map_err(not_found)?;
        json_response(200, format!(r#"{{"ok":true,"moderated":{}}}"#, notice.to_json()))
            .map_err(internal("answering an admin action"))
    }

    /// Stores what a moderation action changed, closes the sockets it ejects and tells the
    /// room, returning the `moderated` notice; `not_found` when it deletes no message.
    fn enforce(&self, moderation: Moderation) -> Result<ServerFrame, ErrorCode> {
        let Moderation { action, by, mut target, ejected, close, left, imposed, lifted, deleted } = moderation;
        let now = now_ms();
        let stored = (|| -> worker::Result<Option<ServerFrame>> {
            if let Some(sanction) = &imposed {
                self.store.impose(sanction)?;
            }
            for sanction in &lifted {
                self.store.lift(sanction)?;
            }
            Ok(match (&action, deleted) {
                (Action::Delete { .. }, Some(change @ Change::Delete { id, seq, .. })) => {
                    self.store.tombstone(id, seq)?.map(|author| {
                        target = Some(author);
                        change.frame()
                    })
                }
                (Action::Clear, _) => {
                    let room = self.room.borrow();
                    let (last_id, last_at) = room.last_message();
                    self.store.clear(last_id, last_at, room.last_seq())?;
                    None
                }
                (Action::Slow { seconds }, _) => {
                    self.store.set_setting(SLOW_MODE, &seconds.to_string())?;
                    None
                }
                _ => None,
            })
        })();
        let deleted = match stored {
            Ok(deleted) => deleted,
            Err(error) => {
                worker::console_error!("edge-chat: storing a moderation action failed: {error}");
                return Err(ErrorCode::Unavailable);
            }
        };
        if matches!(action, Action::Delete { .. }) && deleted.is_none() {
            return Err(ErrorCode::NotFound);
        }
        let mut ejected_socketio = false;
        for attachment in &ejected {
            if self.end_stream(&attachment.id, None, close.0, close.1) {
                continue;
            }
            let Some(socket) = self.socket_of(&attachment.id) else {
                self.socketio_goodbye(Peer::Session(&attachment.id));
                ejected_socketio |= self.wires.sio.end_session(&attachment.id);
                continue;
            };
            self.socketio_goodbye(Peer::Socket(&socket));
            self.attach(&socket, attachment.clone());
            self.wires.members.delete(socket.as_ref());
            self.wires.batched.delete(socket.as_ref());
            ejected_socketio |= self.wires.sio.remove(socket.as_ref());
            if let Err(error) = socket.close(Some(close.0), Some(close.1)) {
                worker::console_error!("edge-chat: closing an ejected socket failed: {error}");
            }
        }
        let notice = ServerFrame::Moderated { action: action.name(), target: target.clone(), by: by.clone(), at: now };
        for frame in deleted.iter().chain(left.iter()).chain([&notice]) {
            self.broadcast(frame.to_json());
        }
        if !ejected.is_empty() {
            self.schedule_expiry_if_empty();
            if ejected_socketio {
                self.socketio_departed();
            }
        }
        let entry = AuditEntry { at: now, action: action.name().to_owned(), target, by };
        if let Err(error) = self.store.audit(&entry) {
            worker::console_error!("edge-chat: writing the audit trail failed: {error}");
        }
        Ok(notice)
    }

    #[inline(never)]
    fn bans(&self, room_name: &str) -> Result<Response, RequestError> {
        #[derive(Serialize)]
        struct Bans<'a> {
            room: &'a str,
            bans: Vec<Sanction>,
        }
        let bans = self.room.borrow().bans(now_ms());
        json_response(200, serde_json::to_string(&Bans { room: room_name, bans }).map_err(internal("encoding bans"))?)
            .map_err(internal("answering bans"))
    }

    #[inline(never)]
    fn audit_trail(&self, room_name: &str) -> Result<Response, RequestError> {
        #[derive(Serialize)]
        struct Audit<'a> {
            room: &'a str,
            entries: Vec<AuditEntry>,
        }
        let entries = self.store.audit_trail().map_err(internal("reading the audit trail"))?;
        json_response(200, serde_json::to_string(&Audit { room: room_name, entries }).map_err(internal("encoding audit"))?)
            .map_err(internal("answering audit"))
    }

    /// A member's socket by its id: a moderator's action names few, so a scan is fine.
    fn socket_of(&self, id: &str) -> Option<WebSocket> {
        if let Some(socket) = self.wires.sio.socket_of(id) {
            return Some(socket);
        }
        let mut found = None;
        self.wires.members.for_each(&mut |value, key| {
            if found.is_none() && value.as_string().as_deref() == Some(id) {
                found = Some(WebSocket::from(key.unchecked_into::<web_sys::WebSocket>()));
            }
        });
        found
    }

    /// Stores the message, then broadcasts it; a sender that named it with a `cid` gets its own
    /// copy with the `cid`, and a Socket.IO emit waiting for an ack its id. False if the message
    /// could not be stored, and so was not broadcast: the caller tells its sender to send it again.
    fn post(&self, sender: Peer<'_>, message: ChatMessage, sender_key: &str, cid: Option<String>, answer: &Answer) -> bool {
        let post = [HeldPost { message, sender: sender_key.to_owned(), cid, from: () }];
        if let Err(error) = self.store.insert_all(&post) {
            worker::console_error!("edge-chat: storing message {} failed: {error}", post[0].message.id);
            return false;
        }
        let [HeldPost { message, cid, .. }] = post;
        let (id, seq) = (message.id, message.seq);
        match encode_post(&message, cid.as_deref()) {
            Ok((json, None)) => self.broadcast(json),
            Ok((json, Some(own))) => {
                self.broadcast_except(sender, &json);
                self.send_to(sender, answer, own, Some(seq));
            }
            Err(error) => worker::console_error!("edge-chat: encoding message {id} failed: {error}"),
        }
        // Stored and sent: a Socket.IO emit waiting for an ack learns the id.
        if answer.ack_ok().is_some() {
            self.acknowledge(sender, answer, &format!(r#"{{"id":{id}}}"#));
        }
        true
    }

    /// A message sent again with a `cid` already stored: the sender alone gets the stored one
    /// (same id, `at` and `seq`, with its `cid`) again, and an emit waiting for an ack its id. A
    /// stream's event has no `id:`, since its seq may be older than where the stream is.
    fn resend(&self, sender: Peer<'_>, message: &ChatMessage, answer: &Answer) {
        match serde_json::to_string(message) {
            Ok(json) => self.send_to(sender, answer, json, None),
            Err(error) => worker::console_error!("edge-chat: encoding message {} failed: {error}", message.id),
        }
        if answer.ack_ok().is_some() {
            self.acknowledge(sender, answer, &format!(r#"{{"id":{}}}"#, message.id));
        }
    }

    /// Stores an edit, delete or reaction, then broadcasts it; else the error for its sender.
    fn change(&self, change: Change) -> Result<(), ErrorCode> {
        match self.store.apply(&change) {
            Ok(true) => {
                self.broadcast(change.frame().to_json());
                Ok(())
            }
            Ok(false) => Err(ErrorCode::NotFound),
            Err(error) => {
                worker::console_error!("edge-chat: storing a change to message {} failed: {error}", change.id());
                Err(ErrorCode::Unavailable)
            }
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

    /// Reads where the stored history ends, unless the room knows already. False if storage
    /// cannot say: the caller answers `unavailable`, and the next event tries again.
    fn load_history(&self) -> bool {
        if self.room.borrow().history_known() {
            return true;
        }
        match self.store.last() {
            Ok((last_id, last_at, last_seq)) => {
                let mut room = self.room.borrow_mut();
                room.resume_history(last_id, last_at, last_seq);
                // A room without storage has nothing to restore (and need not compile the code that would).
                if self.store.has_schema() {
                    self.restore_moderation(&mut room);
                }
                true
            }
            Err(error) => {
                worker::console_error!("edge-chat: reading the last message failed: {error}");
                false
            }
        }
    }

    /// When the last member has left, replaces the idle check's alarm with the one that deletes
    /// the room's storage after `ROOM_TTL_DAYS` without sockets (and so without messages): one
    /// storage write per emptying, one wake per idle room.
    fn schedule_expiry_if_empty(&self) {
        if self.room.borrow().is_empty() {
            self.plan_alarm(now_ms());
        }
    }

    /// Sets the room's one alarm to the earliest time a feature needs it, or deletes it when
    /// none does: the idle check while the room has native members (`Liveness::alarm_need`), the
    /// Socket.IO heartbeat while it has Socket.IO clients (`Heartbeat::next_wake`, kept once
    /// planned, so that re-planning never postpones a ping round), the expiry once it has none,
    /// if it stored anything. Called when that changes (the first member joins, the last leaves,
    /// the first or last Socket.IO client comes or goes) and after each alarm, so an empty room
    /// is never woken for idle checks and an occupied one at most once per `IDLE_TIMEOUT_S`.
    fn plan_alarm(&self, now: u64) {
        let occupied = !self.room.borrow().is_empty();
        let idle_check = self.liveness.borrow().alarm_need(self.wires.members.size() > 0, now);
        let ping = self.next_ping.get().or_else(|| self.heartbeat.next_wake(self.wires.sio.count(), now));
        self.next_ping.set(ping.filter(|_| self.wires.sio.count() > 0));
        let expiry = (!occupied && self.load_history() && self.store.has_schema()).then(|| now + self.idle_ttl_ms);
        if let Some(at) = expiry {
            // Recorded, so that the alarm can tell its expiry from an idle check's.
            if let Err(error) = self.store.set_setting(EXPIRES_AT, &at.to_string()) {
                worker::console_error!("edge-chat: recording when the room expires failed: {error}");
            }
        }
        match idle_check.into_iter().chain(self.next_ping.get()).chain(expiry).min() {
            Some(at) => self.set_alarm(at),
            None => {
                let deleted = self.state.as_raw().storage().and_then(|storage| storage.delete_alarm(js_sys::Object::new()));
                if let Err(error) = deleted {
                    worker::console_error!("edge-chat: deleting the room's alarm failed: {}", worker::Error::from(error));
                }
            }
        }
    }

    fn set_alarm(&self, at: u64) {
        let at = js_sys::Date::new(&JsValue::from_f64(at as f64));
        let set = self.state.as_raw().storage().and_then(|storage| storage.set_alarm(at, js_sys::Object::new()));
        if let Err(error) = set {
            worker::console_error!("edge-chat: setting the room's alarm failed: {}", worker::Error::from(error));
        }
    }

    /// Closes (1001, "idle") the members silent for `IDLE_TIMEOUT_S`, if one could be by now,
    /// and announces their leave once.
    fn sweep_if_due(&self, now: u64) {
        if self.liveness.borrow().sweep_due(now) {
            self.sweep(now);
        }
    }

    /// Out of line: most events find no sweep due, and V8 compiles a WASM function on its first call.
    #[inline(never)]
    fn sweep(&self, now: u64) {
        let mut members = Vec::with_capacity(self.wires.members.size() as usize);
        self.wires.members.for_each(&mut |id, socket| {
            if let Some(id) = id.as_string() {
                members.push((socket.unchecked_into::<web_sys::WebSocket>(), id));
            }
        });
        let state: &RoomState = self.state.as_raw().unchecked_ref();
        let idle = self.liveness.borrow_mut().sweep(now, members, |socket| last_ping(state, socket));
        if idle.is_empty() {
            return;
        }
        for (socket, id) in idle {
            let socket = WebSocket::from(socket);
            let attachment = self.room.borrow().attachment(&id);
            if let Some(member) = attachment {
                self.attach(&socket, Attachment { gone: true, ..member });
            }
            self.wires.members.delete(socket.as_ref());
            self.wires.batched.delete(socket.as_ref());
            if let Err(error) = socket.close(Some(IDLE_CLOSE_CODE), Some(IDLE_CLOSE_REASON)) {
                worker::console_error!("edge-chat: closing an idle socket failed: {error}");
            }
            let left = self.room.borrow_mut().leave(&id, now);
            if let Some(left) = left {
                self.broadcast(left.to_json());
            }
        }
        self.schedule_expiry_if_empty();
    }

    /// Takes back what the room stored besides messages: nick reservations, bans and mutes
    /// still in force, and slow mode. A failed read is logged; the room goes on without it.
    #[inline(never)]
    fn restore_moderation(&self, room: &mut Room) {
        match self.store.reservations() {
            Ok(reservations) => reservations.into_iter().for_each(|r| room.restore_reservation(r)),
            Err(error) => worker::console_error!("edge-chat: reading nick reservations failed: {error}"),
        }
        match self.store.sanctions(now_ms()) {
            Ok(sanctions) => sanctions.into_iter().for_each(|s| room.restore_sanction(s)),
            Err(error) => worker::console_error!("edge-chat: reading bans and mutes failed: {error}"),
        }
        match self.store.setting(SLOW_MODE) {
            Ok(seconds) => room.restore_slow_mode(seconds.and_then(|s| s.parse().ok()).unwrap_or(0)),
            Err(error) => worker::console_error!("edge-chat: reading slow mode failed: {error}"),
        }
    }

    fn depart(&self, socket: &WebSocket) {
        self.sockets.delete(socket.as_ref());
        self.wires.sio.forget_probe(socket.as_ref());
        let sio_id = self.wires.sio.id_of(socket.as_ref());
        let Some(id) = sio_id.clone().or_else(|| self.member_id(socket.as_ref())) else { return };
        self.wires.members.delete(socket.as_ref());
        self.wires.batched.delete(socket.as_ref());
        self.wires.sio.remove(socket.as_ref());
        let left = self.room.borrow_mut().leave(&id, now_ms());
        if let Some(left) = left {
            self.broadcast(left.to_json());
        }
        self.schedule_expiry_if_empty();
        if sio_id.is_some() {
            self.socketio_departed();
        }
    }

    /// Sends one frame to every member, now or batched with others (see `outbox`), after the
    /// held posts.
    fn broadcast(&self, json: String) {
        self.store_held();
        if self.wires.broadcast(json) {
            schedule(&self.tick);
        }
    }

    /// Sends one frame now to every member but `sender`, after the held posts and what the outbox
    /// holds; the sender gets its own frame (or none) from the caller.
    fn broadcast_except(&self, sender: Peer<'_>, json: &str) {
        self.store_held();
        let skip_stream = match sender {
            Peer::Stream(id) => self.stream_of(id).unwrap_or(JsValue::UNDEFINED),
            Peer::Socket(_) | Peer::Session(_) => JsValue::UNDEFINED,
        };
        self.wires.broadcast_except(sender, &skip_stream, json);
    }

    /// Stores the held posts and sends them, before anything that reads the history or sends a
    /// frame of its own (see `held`).
    fn store_held(&self) {
        if self.held.borrow().is_empty() {
            return;
        }
        let posts = self.held.borrow_mut().take();
        if publish_held(&self.wires, &self.store, posts) {
            schedule(&self.tick);
        }
    }

    /// Sends a frame meant for its sender alone (its own message with its `cid`), after what the
    /// outbox holds: the native frame, the events a broadcast of it makes in a Socket.IO client's
    /// namespaces, or a stream's event with `position` as its `id:`.
    fn send_to(&self, sender: Peer<'_>, answer: &Answer, json: String, position: Option<u64>) {
        self.flush();
        match (answer, sender) {
            (Answer::SocketIo { .. }, sender) => self.socketio_own(sender, &json),
            (Answer::Native, Peer::Socket(socket)) => send_raw(socket, &JsString::from(json)),
            (Answer::Native, Peer::Stream(id)) => {
                if let Some(handle) = self.stream_of(id) {
                    send_stream(&handle, &JsString::from(sse::event_at(&json, position)));
                }
            }
            (Answer::Native, Peer::Session(_)) => {}
        }
    }

    fn carry_out(&self, step: Step<WebSocket>) {
        if self.wires.carry_out_step(step) {
            schedule(&self.tick);
        }
    }

    /// Sends the held posts and what the outbox holds now, so that a frame sent to one socket
    /// does not overtake them.
    fn flush(&self) {
        self.store_held();
        self.wires.flush();
    }

    fn reply(&self, socket: &WebSocket, frame: &ServerFrame) {
        self.flush();
        send_one(socket, frame);
    }

    fn attach(&self, socket: &WebSocket, member: Attachment) {
        let seen = self.liveness.borrow_mut().seen(&member.id, now_ms());
        let socketio = attachment(socket).and_then(|previous| previous.socketio);
        attach(socket, &SocketAttachment { member, batch: self.wires.batched.has(socket.as_ref()), seen, socketio });
    }

    /// The id of a member's socket; `None` for a socket that is not (or no longer) a member.
    fn member_id(&self, socket: &JsValue) -> Option<String> {
        self.wires.members.get(socket).as_string()
    }
}

/// The sockets that joined while the outbox held frames, in the order they joined, which is
/// the order of `Delivery::newcomers`. Kept in step with the outbox: both forget them at every
/// delivery.
#[derive(Default)]
struct Newcomers {
    set: Set,
    order: RefCell<Vec<JsValue>>,
}

impl Newcomers {
    fn add(&self, socket: &JsValue) {
        self.set.add(socket);
        self.order.borrow_mut().push(socket.clone());
    }

    fn clear(&self) {
        if !self.order.borrow().is_empty() {
            self.set.clear();
            self.order.borrow_mut().clear();
        }
    }
}

/// Where the room's frames go: its members by wire format, and the outbox that batches them.
/// Shared with the tick, which runs apart from the object's events.
#[derive(Clone)]
struct Wires {
    /// Every member's socket, to the id it was tagged with when it joined: exactly the room's
    /// native members, kept in step with `room`.
    members: Map,
    /// The members that opted in to batched delivery.
    batched: Set,
    /// Every open event stream's handle, to its member id: members that live in memory only.
    streams: Map,
    /// The Socket.IO members, apart from `members` (see `socketio`).
    sio: Rc<SocketIoSockets>,
    outbox: Rc<RefCell<Outbox<WebSocket>>>,
    newcomers: Rc<Newcomers>,
}

/// Who sent a held post: the member, and its socket.
struct Sender {
    id: String,
    socket: WebSocket,
}

impl Wires {
    /// One frame for every member, now or batched with others; true when the caller must ask
    /// for a tick.
    fn broadcast(&self, json: String) -> bool {
        let step = self.outbox.borrow_mut().push(json);
        self.carry_out_step(step)
    }

    /// Carries out `step`; true when it asks for a tick.
    fn carry_out_step(&self, step: Step<WebSocket>) -> bool {
        match step {
            Step::Wait => false,
            Step::Send(delivery) => {
                self.carry_out(delivery);
                false
            }
            Step::SendAndTick(delivery) => {
                self.carry_out(delivery);
                true
            }
        }
    }

    /// Sends one frame now to every member but `sender` and `skip_stream` (a stream's handle, or
    /// undefined): native sockets, Socket.IO clients and event streams, each wire format encoded
    /// once, after what the outbox holds, so that order holds.
    fn broadcast_except(&self, sender: Peer<'_>, skip_stream: &JsValue, json: &str) {
        self.flush();
        let skip = Set::new(&JsValue::UNDEFINED);
        if let Peer::Socket(socket) = sender {
            skip.add(socket.as_ref());
        }
        let frames = Array::of1(&JsString::from(json));
        deliver(&self.members, &self.batched, &skip, &frames, &JsValue::UNDEFINED);
        self.sio.deliver(std::slice::from_ref(&json.to_owned()), Some(sender));
        if self.streams.size() > 0 {
            send_streams(&self.streams, &JsString::from(sse::event(json)), skip_stream);
        }
    }

    /// Sends what the outbox holds now.
    fn flush(&self) {
        let delivery = self.outbox.borrow_mut().flush();
        match delivery {
            Some(delivery) => self.carry_out(delivery),
            None => self.newcomers.clear(),
        }
    }

    /// A batch crosses into JS once: each frame as one JS string, the array as another, each
    /// frame's packets once per Socket.IO namespace, and each frame's event once for all the
    /// event streams. Newcomers get their own, shorter batches; streams are never newcomers (the
    /// room sends what it holds before a stream joins).
    fn carry_out(&self, delivery: Delivery<WebSocket>) {
        let Delivery { batch: Batch { frames, array }, newcomers: later, personal } = delivery;
        self.sio.deliver(&frames, None);
        if self.streams.size() > 0 {
            for frame in &frames {
                send_streams(&self.streams, &JsString::from(sse::event(frame)), &JsValue::UNDEFINED);
            }
        }
        if let (None, [frame], true, true) = (&array, frames.as_slice(), later.is_empty(), personal.is_empty()) {
            broadcast(&self.members, &JsString::from(frame.as_str()));
        } else {
            // Newcomers and senders get their own batches below; the others share one.
            let skip = match personal.is_empty() {
                true => self.newcomers.set.clone(),
                false => {
                    let skip = Set::new(&self.newcomers.set);
                    personal.iter().for_each(|Personal { to, .. }| drop(skip.add(to.as_ref())));
                    skip
                }
            };
            // When every member opted in, the array is all they get: the frames need not cross.
            let frames: Array = match (&array, self.batched.size() == self.members.size()) {
                (Some(_), true) => Array::new(),
                _ => frames.iter().map(|frame| JsValue::from(JsString::from(frame.as_str()))).collect(),
            };
            let array = array.map_or(JsValue::UNDEFINED, |array| JsString::from(array).into());
            deliver(&self.members, &self.batched, &skip, &frames, &array);
        }
        for (socket, batch) in self.newcomers.order.borrow().iter().zip(later) {
            if let Some(batch) = batch {
                self.send_batch(socket.unchecked_ref(), batch);
            }
        }
        for Personal { to, batch } in personal {
            self.send_batch(AsRef::<web_sys::WebSocket>::as_ref(&to).unchecked_ref(), batch);
        }
        self.newcomers.clear();
    }

    /// A batch to one socket: as one array if it opted in, else frame by frame. A failed send
    /// means the socket is closing; its close event removes it from the room.
    fn send_batch(&self, socket: &RawSocket, Batch { frames, array }: Batch) {
        match array {
            Some(array) if self.batched.has(socket) => drop(socket.send(&JsString::from(array))),
            _ => frames.iter().for_each(|frame| drop(socket.send(&JsString::from(frame.as_str())))),
        }
    }
}

/// Stores held posts with one statement, then sends each as a post stored at once is sent: its
/// frame to everyone and, with a `cid`, the sender's own copy to the sender alone. If storing
/// fails, none is sent and each sender is told `unavailable`. True when a tick is needed.
fn publish_held(wires: &Wires, store: &MessageStore, posts: Vec<HeldPost<Sender>>) -> bool {
    if posts.is_empty() {
        return false;
    }
    if let Err(error) = store.insert_all(&posts) {
        worker::console_error!("edge-chat: storing {} messages failed: {error}", posts.len());
        wires.flush();
        let refusal = JsString::from(ServerFrame::error(ErrorCode::Unavailable).to_json());
        posts.iter().for_each(|post| send_raw(&post.from.socket, &refusal));
        return false;
    }
    let mut tick = false;
    for HeldPost { message, cid, from: Sender { id: member, socket }, .. } in posts {
        let id = message.id;
        match encode_post(&message, cid.as_deref()) {
            Ok((json, None)) => tick |= wires.broadcast(json),
            // A newcomer's batch starts at its join: its own copy goes apart, after what is queued.
            Ok((json, Some(own))) if wires.newcomers.set.has(socket.as_ref()) => {
                wires.broadcast_except(Peer::Socket(&socket), &JsValue::UNDEFINED, &json);
                send_raw(&socket, &JsString::from(own));
            }
            Ok((json, Some(own))) => {
                let step = wires.outbox.borrow_mut().push_own(json, member, socket, own);
                tick |= wires.carry_out_step(step);
            }
            Err(error) => worker::console_error!("edge-chat: encoding message {id} failed: {error}"),
        }
    }
    tick
}

/// Settings this room keeps in storage.
const SLOW_MODE: &str = "slow_mode";
const ADDRESS_SALT: &str = "address_salt";
/// When an empty room deletes its storage (ms); 0 while it has members.
const EXPIRES_AT: &str = "expires_at";

/// `by` of the operator's actions.
const ADMIN: &str = "admin";

fn send_one(socket: &WebSocket, frame: &ServerFrame) {
    send_raw(socket, &JsString::from(frame.to_json()));
}

/// A failed send means the socket is closing; its close event removes it from the room.
fn send_raw(socket: &WebSocket, data: &JsString) {
    let raw: &RawSocket = AsRef::<worker::web_sys::WebSocket>::as_ref(socket).unchecked_ref();
    let _ = raw.send(data);
}

fn attach(socket: &WebSocket, attachment: &SocketAttachment) {
    let raw: &RawSocket = AsRef::<worker::web_sys::WebSocket>::as_ref(socket).unchecked_ref();
    if let Err(error) = raw.serialize_attachment(&attachment.encode()) {
        worker::console_error!("edge-chat: saving a socket attachment failed: {}", worker::Error::from(error));
    }
}

/// What `attach` saved on `socket`, if anything.
fn attachment(socket: &WebSocket) -> Option<SocketAttachment> {
    let raw: &RawSocket = AsRef::<worker::web_sys::WebSocket>::as_ref(socket).unchecked_ref();
    SocketAttachment::decode(&raw.deserialize_attachment().ok()?.as_string()?)
}

/// When the runtime last answered a `ping` from `socket`; `None` if never (or if it cannot say).
fn last_ping(state: &RoomState, socket: &web_sys::WebSocket) -> Option<u64> {
    match state.auto_response_timestamp(socket) {
        Ok(at) => at.map(|at| at.get_time() as u64),
        Err(error) => {
            worker::console_error!("edge-chat: reading a socket's last ping failed: {}", worker::Error::from(error));
            None
        }
    }
}

/// `Date.now()`: `worker::Date::now` would build a JS `Date` object for every frame.
fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if let Err(error) = get_random_values(&mut bytes) {
        worker::console_error!("edge-chat: no randomness: {}", worker::Error::from(error));
    }
    u64::from_le_bytes(bytes)
}

fn random_id() -> String {
    format!("{:016x}", random_u64())
}
