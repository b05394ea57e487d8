//! Chat clients over real WebSockets. Each client is one task that connects, waits for its
//! welcome, then reads every frame until the connection ends, counting into the shared
//! `Room` of its room, and sends what the scenario's driver tells it to.
//!
//! Message texts carry the sender's number, a sequence number and the send time in
//! microseconds since the harness started, so any receiver can time a delivery whatever the
//! server does around the text (the floor forwards the client's frame as it came).

use crate::target::Target;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

static EPOCH: OnceLock<Instant> = OnceLock::new();

pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Padding so that a message is about as long as a typical chat line (~70 bytes of text).
const PAD: &str = "the quick brown fox jumps over the lazy dog 0123456789";

/// What every client of one room adds to.
#[derive(Default)]
pub struct Room {
    /// Members; a message is delivered once it reached all of them.
    pub size: u64,
    /// Its clients offer the `edge-chat.batch` subprotocol, so frames may come as JSON arrays.
    pub batch: bool,
    /// Batched clients send the messages waiting to go out as one array frame, as the browser
    /// client does with what waited for a connection.
    pub arrays: bool,
    /// Every second client speaks Socket.IO (see `spawn`).
    pub socketio: bool,
    /// WebSocket frames that carried at least one message: deliveries over this is the mean batch.
    pub message_frames: AtomicU64,
    /// Every frame after the welcome, and the WebSocket frames they came in (arrays count once).
    pub frames: AtomicU64,
    pub ws_frames: AtomicU64,
    pub sent: AtomicU64,
    /// Messages the clients wrote, and the WebSocket frames they wrote them in (an array counts once).
    pub said: AtomicU64,
    pub said_frames: AtomicU64,
    pub delivered: AtomicU64,
    pub welcomed: AtomicU64,
    pub errors: AtomicU64,
    pub pongs: AtomicU64,
    pub ended: AtomicU64,
    /// Deliveries of messages sent at or after this time are timed, while `recording` holds.
    pub recording: AtomicBool,
    pub record_from_us: AtomicU64,
    pub latencies_us: Mutex<Vec<u32>>,
    /// While recording: a sender's own messages that took over a second to come back to it.
    pub slow_echoes: AtomicU64,
    /// Signalled when a delivery leaves fewer than this many outstanding: the load driver
    /// waits on it, and waking it for every frame would cost the harness more than the room.
    pub wake_below: AtomicU64,
    pub progress: Notify,
    /// Signalled on every counted frame, for the scenario waiting on a condition.
    changed: Notify,
}

impl Room {
    pub fn new(size: usize, target: &Target) -> Arc<Room> {
        Arc::new(Room { size: size as u64, batch: target.batch, arrays: target.arrays, ..Room::default() })
    }

    /// A room whose odd-numbered clients are Socket.IO clients.
    pub fn mixed(size: usize) -> Arc<Room> {
        Arc::new(Room { size: size as u64, socketio: true, ..Room::default() })
    }

    /// One Socket.IO packet over WebSocket: events count as frames, a `message` event as a message.
    fn on_socketio_text(&self, text: &str, me: usize) {
        self.ws_frames.fetch_add(1, Relaxed);
        // The answer to this client's own Engine.IO ping: what `pong` is to a native client.
        if text == "3" {
            self.pongs.fetch_add(1, Relaxed);
            self.changed.notify_one();
            return;
        }
        if let Some(event) = text.strip_prefix("42") {
            self.frames.fetch_add(1, Relaxed);
            if event.starts_with("[\"message\",") {
                self.message_frames.fetch_add(1, Relaxed);
                self.on_message(event, me);
            } else if event.starts_with("[\"error\",") {
                self.errors.fetch_add(1, Relaxed);
                self.changed.notify_one();
            }
        }
    }

    /// Deliveries still owed for the messages sent so far.
    pub fn outstanding(&self) -> u64 {
        (self.sent.load(Relaxed) * self.size).saturating_sub(self.delivered.load(Relaxed))
    }

    /// Waits until `done` holds, re-checking on every frame, for at most `limit`.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&Room) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(self);
            }
        }
    }

    /// One WebSocket text frame: a frame, or (batched) a JSON array of frames, at client `me`.
    /// An event stream's event counts as one such frame.
    fn on_ws_text(&self, text: &str, me: usize) {
        self.ws_frames.fetch_add(1, Relaxed);
        if !text.starts_with('[') {
            self.frames.fetch_add(1, Relaxed);
            if self.on_text(text, me) {
                self.message_frames.fetch_add(1, Relaxed);
            }
            return;
        }
        let Ok(frames) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text) else {
            self.errors.fetch_add(1, Relaxed);
            return;
        };
        self.frames.fetch_add(frames.len() as u64, Relaxed);
        let mut messages = false;
        for frame in frames {
            messages |= self.on_text(frame.get(), me);
        }
        if messages {
            self.message_frames.fetch_add(1, Relaxed);
        }
    }

    /// Counts one frame; true for a message.
    fn on_text(&self, text: &str, me: usize) -> bool {
        if text.starts_with("{\"type\":\"message\"") {
            self.on_message(text, me);
            return true;
        } else if text.starts_with("{\"type\":\"error\"") {
            self.errors.fetch_add(1, Relaxed);
        } else if text == "pong" {
            self.pongs.fetch_add(1, Relaxed);
        } else {
            return false;
        }
        self.changed.notify_one();
        false
    }

    /// A delivered message (a native frame, or a Socket.IO event's data), timed from its stamp.
    fn on_message(&self, text: &str, me: usize) {
        self.delivered.fetch_add(1, Relaxed);
        if self.outstanding() < self.wake_below.load(Relaxed) {
            self.progress.notify_one();
        }
        if self.recording.load(Relaxed) {
            if let Some((sender, sent_us)) = stamp(text) {
                if sent_us >= self.record_from_us.load(Relaxed) {
                    let latency = now_us().saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
                    self.latencies_us.lock().expect("latency lock").push(latency);
                    if sender == me && latency > 1_000_000 {
                        self.slow_echoes.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        self.changed.notify_one();
    }
}

/// The sender and send time stamped into a message's text: `"text":"SENDER SEQ MICROS ..."`.
fn stamp(frame: &str) -> Option<(usize, u64)> {
    let start = frame.find("\"text\":\"")? + 8;
    let mut words = frame[start..].split(' ');
    let sender = words.next()?.parse().ok()?;
    Some((sender, words.nth(1)?.parse().ok()?))
}

pub enum Command {
    /// Send one chat message, stamped with the time it leaves.
    Say,
    Ping,
    /// Close the socket; the task ends when the server has answered (or the connection ends).
    Close,
}

/// A client task's handle.
pub struct Client {
    pub commands: mpsc::UnboundedSender<Command>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Client {
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }
}

/// When a client got its welcome, measured from when it started connecting.
pub type Welcomed = Result<Duration, String>;

/// Starts a client of `room` at `url`. `number` tags its messages; `welcomed` reports the join.
pub fn spawn(url: String, number: usize, room: Arc<Room>) -> (Client, oneshot::Receiver<Welcomed>) {
    spawn_as(url, number, room, false)
}

/// Starts a Socket.IO client (Engine.IO 4 over WebSocket, namespace `/`) of `room`; `url` is its
/// `/socket.io/` URL.
pub fn spawn_socketio(url: String, number: usize, room: Arc<Room>) -> (Client, oneshot::Receiver<Welcomed>) {
    spawn_as(url, number, room, true)
}

fn spawn_as(url: String, number: usize, room: Arc<Room>, socketio: bool) -> (Client, oneshot::Receiver<Welcomed>) {
    let (commands, inbox) = mpsc::unbounded_channel();
    let (tell, welcomed) = oneshot::channel();
    let task = tokio::spawn(run(url, number, room, inbox, tell, socketio));
    (Client { commands, task }, welcomed)
}

async fn run(
    url: String,
    number: usize,
    room: Arc<Room>,
    mut inbox: mpsc::UnboundedReceiver<Command>,
    welcomed: oneshot::Sender<Welcomed>,
    socketio: bool,
) {
    let started = Instant::now();
    let socket = match tokio::time::timeout(Duration::from_secs(60), connect(&url, room.batch)).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(error)) => return drop(welcomed.send(Err(error))),
        Err(_) => return drop(welcomed.send(Err("connect timed out".into()))),
    };
    let (mut sink, mut stream) = socket.split();
    // A Socket.IO client joins namespace `/` after Engine.IO's open; its welcome is an event.
    let welcome = if socketio { "42[\"welcome\"" } else { "{\"type\":\"welcome\"" };
    let mut joined = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.starts_with(welcome) => {
                room.welcomed.fetch_add(1, Relaxed);
                room.changed.notify_one();
                let _ = welcomed.send(Ok(started.elapsed()));
                break;
            }
            Ok(Some(Ok(Message::Text(text)))) if socketio && text.starts_with('0') && !joined => {
                joined = true;
                if sink.send(Message::text("40")).await.is_err() {
                    return drop(welcomed.send(Err("the Socket.IO connect failed".into())));
                }
            }
            Ok(Some(Ok(Message::Text(text)))) if socketio && text.starts_with("40") => {}
            other => return drop(welcomed.send(Err(format!("expected a welcome, got {other:?}")))),
        }
    }
    let mut seq = 0u64;
    let mut inbox_open = true;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) if socketio => {
                    if text.as_str() == "2" && sink.send(Message::text("3")).await.is_err() {
                        break;
                    }
                    room.on_socketio_text(text.as_str(), number);
                }
                Some(Ok(Message::Text(text))) => room.on_ws_text(text.as_str(), number),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            command = inbox.recv(), if inbox_open => {
                let Some(command) = command else {
                    inbox_open = false;
                    continue;
                };
                let message = match command {
                    Command::Say if room.arrays && !socketio => {
                        // What else is waiting goes in the same frame: an array of up to 64 messages.
                        let mut says = vec![say(number, &mut seq)];
                        let mut after = None;
                        while says.len() < MAX_ARRAY_ITEMS {
                            match inbox.try_recv() {
                                Ok(Command::Say) => says.push(say(number, &mut seq)),
                                Ok(other) => {
                                    after = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        room.said.fetch_add(says.len() as u64, Relaxed);
                        room.said_frames.fetch_add(1, Relaxed);
                        let frame = if says.len() == 1 { says.remove(0) } else { format!("[{}]", says.join(",")) };
                        if sink.send(Message::text(frame)).await.is_err() {
                            break;
                        }
                        match after {
                            Some(command) => plain(command, socketio, number, &mut seq),
                            None => continue,
                        }
                    }
                    command => {
                        if matches!(command, Command::Say) {
                            room.said.fetch_add(1, Relaxed);
                            room.said_frames.fetch_add(1, Relaxed);
                        }
                        plain(command, socketio, number, &mut seq)
                    }
                };
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        }
    }
    room.ended.fetch_add(1, Relaxed);
    room.changed.notify_one();
}

/// The most frames in an array a client sends.
const MAX_ARRAY_ITEMS: usize = 64;

/// A chat message frame, tagged with the client's `number`, its sequence and when it was sent.
fn say(number: usize, seq: &mut u64) -> String {
    *seq += 1;
    format!("{{\"type\":\"message\",\"text\":\"{number} {seq} {} {PAD}\"}}", now_us())
}

/// A command as one WebSocket frame of its own.
fn plain(command: Command, socketio: bool, number: usize, seq: &mut u64) -> Message {
    match command {
        Command::Say if socketio => {
            *seq += 1;
            Message::text(format!("42[\"message\",\"{number} {seq} {} {PAD}\"]", now_us()))
        }
        Command::Say => Message::text(say(number, seq)),
        Command::Ping if socketio => Message::text("2"),
        Command::Ping => Message::text("ping"),
        Command::Close => Message::Close(None),
    }
}

/// Starts an event-stream member of `room` (`GET path` on loopback, `path` like
/// `/chat/NAME/events?nick=N`): it reads, never posts. `welcomed` reports the join.
pub fn spawn_sse(port: u16, path: String, number: usize, room: Arc<Room>) -> (tokio::task::JoinHandle<()>, oneshot::Receiver<Welcomed>) {
    let (tell, welcomed) = oneshot::channel();
    (tokio::spawn(run_sse(port, path, number, room, tell)), welcomed)
}

/// HTTP/1.0, so that the body comes as the stream's bytes until the connection ends, without
/// chunk framing. Every `data:` line is one frame, counted as a socket counts a frame.
async fn run_sse(port: u16, path: String, number: usize, room: Arc<Room>, welcomed: oneshot::Sender<Welcomed>) {
    let started = Instant::now();
    let mut welcomed = Some(welcomed);
    let fail = |welcomed: &mut Option<oneshot::Sender<Welcomed>>, why: String| {
        if let Some(tell) = welcomed.take() {
            let _ = tell.send(Err(why));
        }
    };
    let mut tcp = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(tcp) => tcp,
        Err(error) => return fail(&mut welcomed, format!("connect: {error}")),
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n");
    if let Err(error) = tcp.write_all(request.as_bytes()).await {
        return fail(&mut welcomed, format!("request: {error}"));
    }
    let (mut pending, mut chunk, mut in_body) = (Vec::new(), vec![0u8; 16 * 1024], false);
    loop {
        let n = match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        if !in_body {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            if head.split(' ').nth(1) != Some("200") {
                return fail(&mut welcomed, format!("stream refused: {}", head.lines().next().unwrap_or_default()));
            }
            pending.drain(..end + 4);
            in_body = true;
        }
        let mut start = 0;
        while let Some(length) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + length];
            start += length + 1;
            let Some(data) = line.strip_prefix(b"data: ") else { continue };
            let Ok(text) = std::str::from_utf8(data) else { continue };
            if text.starts_with("{\"type\":\"welcome\"") {
                if let Some(tell) = welcomed.take() {
                    room.welcomed.fetch_add(1, Relaxed);
                    room.changed.notify_one();
                    let _ = tell.send(Ok(started.elapsed()));
                }
            } else if welcomed.is_none() {
                room.on_ws_text(text, number);
            }
        }
        pending.drain(..start);
    }
    fail(&mut welcomed, "the stream ended before its welcome".into());
    room.ended.fetch_add(1, Relaxed);
    room.changed.notify_one();
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// The subprotocol a client offers to receive several frames in one (README, "Batched delivery").
pub const BATCH_PROTOCOL: &str = "edge-chat.batch";

/// Connects to `url`; with `batch`, offers `edge-chat.batch` and checks that the server took it.
pub async fn connect(url: &str, batch: bool) -> Result<Socket, String> {
    let address = url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
    let tcp = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    upgrade(url, tcp, batch).await
}

pub async fn upgrade(url: &str, tcp: TcpStream, batch: bool) -> Result<Socket, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().map_err(|e| format!("request: {e}"))?;
    if batch {
        request.headers_mut().insert("sec-websocket-protocol", BATCH_PROTOCOL.parse().expect("a header value"));
    }
    let (socket, response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config())).await.map_err(|e| format!("upgrade: {e}"))?;
    let answered = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
    if batch && answered != Some(BATCH_PROTOCOL) {
        return Err(format!("offered {BATCH_PROTOCOL}, the server answered {answered:?}"));
    }
    Ok(socket)
}

/// tungstenite zero-fills its whole read buffer before every read: at the default 128 KiB
/// that memset was most of the harness's CPU with a thousand sockets. Chat frames are small.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// A plain HTTP/1.1 GET on loopback: status and body. The response ends where its
/// Content-Length (or last chunk) says: workerd keeps the connection open regardless.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.map_err(|e| e.to_string())?;
            response.extend_from_slice(&chunk[..n]);
            if n == 0 || complete(&response) {
                break;
            }
        }
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no HTTP status")?;
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "HTTP response timed out".to_owned())?
}

fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_ascii_lowercase())
        })
    };
    if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.len() >= length
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body.ends_with("0\r\n\r\n")
    } else {
        false
    }
}

/// How many members `/chat/ROOM/users` reports.
pub async fn member_count(port: u16, room: &str) -> Result<u64, String> {
    let (_, body) = http_get(port, &format!("/chat/{room}/users")).await?;
    let at = body.find("\"count\":").ok_or_else(|| format!("no count in {body}"))? + 8;
    body[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().map_err(|e| format!("{e}"))
}
