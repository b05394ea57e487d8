//! Socket.IO v4 clients (Engine.IO protocol 4, Socket.IO protocol 5) as plain strings in and
//! out: reading a client's packets into native frames for the room, and writing the room's
//! native frames as Socket.IO events, once per namespace. No I/O: the Durable Object carries out
//! what this decides, as for native sockets.
//!
//! Two namespaces reach a room, after the two NestJS gateways that edge chat replaces: `/`
//! speaks the first gateway's events besides the native ones (`user-joined`, `user-left`,
//! `newMessage`), `/chat` the second's too (`{msg}` notices as `message` events). Both get
//! `userConnected`/`userDisconnected` and `activeUsers`, which collide with nothing.

use crate::chat::protocol::{json_text, ErrorCode, MAX_FRAME_BYTES};
use crate::edge::config::BadVar;
use serde_json::{Map, Value};

/// The path Socket.IO clients use by default.
pub const PATH: &str = "socket.io";
/// Separates packets in a long-polling body (Engine.IO 4).
pub const RECORD_SEPARATOR: char = '\x1e';
/// Engine.IO packets of the server's heartbeat.
pub const PING: &str = "2";
/// Engine.IO `noop`: ends a pending poll during the upgrade to WebSocket.
pub const NOOP: &str = "6";
/// The largest body or frame a client may send: what the open packet announces as `maxPayload`.
pub const MAX_PAYLOAD: usize = MAX_FRAME_BYTES;
/// Longest namespace name echoed in a CONNECT_ERROR.
const MAX_NAMESPACE_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// `/`: the first gateway's.
    Root,
    /// `/chat`: the second gateway's.
    Chat,
}

impl Namespace {
    pub const ALL: [Namespace; 2] = [Namespace::Root, Namespace::Chat];

    fn named(name: &str) -> Option<Namespace> {
        match name {
            "" | "/" => Some(Namespace::Root),
            "/chat" => Some(Namespace::Chat),
            _ => None,
        }
    }

    /// Its bit in a socket's set of connected namespaces (see `Namespaces`).
    pub fn bit(self) -> u8 {
        match self {
            Namespace::Root => 1,
            Namespace::Chat => 2,
        }
    }

    /// What precedes a packet's data: nothing for `/`, else the name and a comma.
    fn prefix(self) -> &'static str {
        match self {
            Namespace::Root => "",
            Namespace::Chat => "/chat,",
        }
    }
}

/// The namespaces one Engine.IO connection has joined (a client multiplexes them), as bits.
pub type Namespaces = u8;

/// What a Socket.IO socket carries through hibernation besides the room's attachment: what its
/// welcome needs (a namespace is joined after the upgrade) and the namespaces it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketIoAttachment {
    pub room: String,
    pub since: Option<u64>,
    pub after: Option<u64>,
    pub namespaces: Namespaces,
    /// Why the nick asked for was not given (the native `error` frame), for the first namespace joined.
    pub refused_nick: Option<String>,
}

/// The Socket.IO heartbeat's timing, from `SIO_PING_INTERVAL_MS` and `SIO_PING_TIMEOUT_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { interval_ms: 30_000, timeout_ms: 60_000 }
    }
}

impl Heartbeat {
    /// Reads both vars through `var`; a value that is not a whole number above 0 is reported and
    /// the default kept.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> (Heartbeat, Vec<BadVar>) {
        let mut heartbeat = Heartbeat::default();
        let mut bad = Vec::new();
        for (name, slot) in [("SIO_PING_INTERVAL_MS", &mut heartbeat.interval_ms), ("SIO_PING_TIMEOUT_MS", &mut heartbeat.timeout_ms)] {
            if let Some(value) = var(name) {
                match value.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => *slot = ms,
                    _ => bad.push(BadVar { name, value, why: "not a whole number above 0; using the default" }),
                }
            }
        }
        (heartbeat, bad)
    }

    /// When a room must wake next to ping its Socket.IO sockets: one interval from `now` while it
    /// holds any, else never. The room's single alarm is the earliest of every feature's need.
    pub fn next_wake(&self, sockets: usize, now: u64) -> Option<u64> {
        (sockets > 0).then(|| now.saturating_add(self.interval_ms))
    }

    /// The Engine.IO open packet: `sid` names the connection, `upgrades` lists `websocket` for a
    /// polling session.
    pub fn open_packet(&self, sid: &str, can_upgrade: bool) -> String {
        let upgrades = if can_upgrade { r#"["websocket"]"# } else { "[]" };
        format!(
            r#"0{{"sid":{},"upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{MAX_PAYLOAD}}}"#,
            json_string(sid),
            self.interval_ms,
            self.timeout_ms
        )
    }
}

/// One Engine.IO packet from a client, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `3`: the answer to the server's ping; `3probe` during an upgrade.
    Pong,
    /// `2` or `2probe`: answered with `3` and the same data.
    Ping(String),
    /// `5`: the client moves to the WebSocket it probed.
    Upgrade,
    /// `6`
    Noop,
    /// `1`: the client closes.
    Close,
    /// `40`: joining a namespace; `Err` holds an unknown namespace's name.
    Connect(Result<Namespace, String>),
    /// `41`
    Disconnect(Namespace),
    /// `42`: an event, read into a native client frame for the room (or why it cannot be), with
    /// the ack id the client waits on, if any.
    Event { namespace: Namespace, ack: Option<u64>, frame: Result<String, ErrorCode> },
    /// `45` / `46`: binary events and acks are refused with an `error` event.
    Binary { namespace: Namespace, ack: Option<u64> },
    /// Whatever else a client may send and needs no answer (acks of ours, which we never ask for).
    Ignored,
    /// Not a packet at all: the connection is closed.
    Malformed,
}

/// Reads one Engine.IO packet (a WebSocket text frame, or one record of a polling body).
pub fn parse(packet: &str) -> Inbound {
    let mut chars = packet.chars();
    match chars.next() {
        Some('1') => Inbound::Close,
        Some('2') => Inbound::Ping(chars.as_str().to_owned()),
        Some('3') => Inbound::Pong,
        Some('4') => parse_socket_io(chars.as_str()),
        Some('5') => Inbound::Upgrade,
        Some('6') => Inbound::Noop,
        _ => Inbound::Malformed,
    }
}

fn parse_socket_io(packet: &str) -> Inbound {
    let Some(kind) = packet.chars().next() else { return Inbound::Malformed };
    let rest = &packet[kind.len_utf8()..];
    // `/name,` comes first when the namespace is not `/`.
    let (name, rest) = match rest.strip_prefix('/') {
        Some(_) => match rest.split_once(',') {
            Some((name, rest)) => (name, rest),
            None => (rest, ""),
        },
        None => ("/", rest),
    };
    let namespace = Namespace::named(name);
    if kind == '0' {
        return match namespace {
            Some(namespace) => Inbound::Connect(Ok(namespace)),
            None if is_printable_name(name) => Inbound::Connect(Err(name.to_owned())),
            None => Inbound::Malformed,
        };
    }
    let Some(namespace) = namespace else { return Inbound::Ignored };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    // An ack id is at most a JS safe integer; more digits than that is not a client we know.
    let ack = match digits {
        0 => None,
        1..=15 => rest[..digits].parse().ok(),
        _ => return Inbound::Malformed,
    };
    let data = &rest[digits..];
    match kind {
        '1' => Inbound::Disconnect(namespace),
        '2' => Inbound::Event { namespace, ack, frame: event_frame(data) },
        '5' | '6' => Inbound::Binary { namespace, ack },
        '3' => Inbound::Ignored,
        _ => Inbound::Malformed,
    }
}

fn is_printable_name(name: &str) -> bool {
    name.len() <= MAX_NAMESPACE_CHARS
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
}

/// An event's data, `["name", arg]`, as the native frame the room reads: `message` takes a
/// string or `{text}`, `newMessage` (the first gateway's) is a message, `nick` a string or
/// `{nick}`, and any other event with an object (or nothing) is the native frame of that type,
/// so that frames added to the native protocol need no code here.
fn event_frame(data: &str) -> Result<String, ErrorCode> {
    if data.len() > MAX_FRAME_BYTES {
        return Err(ErrorCode::TooLong);
    }
    let Ok(Value::Array(mut items)) = serde_json::from_str::<Value>(data) else { return Err(ErrorCode::BadJson) };
    if items.is_empty() {
        return Err(ErrorCode::BadJson);
    }
    let Value::String(name) = items.remove(0) else { return Err(ErrorCode::BadJson) };
    let name = if name == "newMessage" { "message".to_owned() } else { name };
    // One field is inserted rather than collected: `Map::from_iter` brings a sort into the WASM module.
    let one_field = |name: &str, value: String| {
        let mut fields = Map::new();
        fields.insert(name.to_owned(), Value::String(value));
        fields
    };
    let mut frame = match (name.as_str(), items.into_iter().next()) {
        ("message", Some(Value::String(text))) => one_field("text", text),
        ("nick", Some(Value::String(nick))) => one_field("nick", nick),
        (_, Some(Value::Object(fields))) => fields,
        (_, None) => Map::new(),
        _ => return Err(ErrorCode::BadJson),
    };
    frame.insert("type".to_owned(), Value::String(name));
    Ok(json_text(&Value::Object(frame)))
}

/// `40{"sid":NICK}`: a namespace joined; the client's `socket.id` is the user's nick.
pub fn connect_ack(namespace: Namespace, nick: &str) -> String {
    format!(r#"40{}{{"sid":{}}}"#, namespace.prefix(), json_string(nick))
}

/// `41`: the server ends the client's session in a namespace; socket.io-client does not reconnect.
pub fn disconnect(namespace: Namespace) -> String {
    format!("41{}", namespace.prefix())
}

/// `44/name,{"message":..}`: no such namespace here.
pub fn unknown_namespace(name: &str) -> String {
    format!(r#"44{name},{{"message":"Invalid namespace"}}"#)
}

/// CONNECT_ERROR to both namespaces (a refused client has not said which it wants yet), with the
/// native error code in `data`: socket.io-client reports it as `connect_error` and stops retrying.
pub fn refusal(code: &str, message: &str) -> [String; 2] {
    let body = format!(r#"{{"message":{},"data":{{"code":{}}}}}"#, json_string(message), json_string(code));
    Namespace::ALL.map(|namespace| format!("44{}{body}", namespace.prefix()))
}

/// `42["name",payload]` in `namespace`; `payload` is JSON.
pub fn event(namespace: Namespace, name: &str, payload: &str) -> String {
    format!(r#"42{}[{},{payload}]"#, namespace.prefix(), json_string(name))
}

/// `43<id>[payload]`: the answer to an emit that waits for one.
pub fn ack(namespace: Namespace, id: u64, payload: &str) -> String {
    format!("43{}{id}[{payload}]", namespace.prefix())
}

/// The `error` event for a refused frame (the native error frame as its payload), or the ack
/// `[{"error":CODE}]` when the emit waits for one.
pub fn refused(namespace: Namespace, ack_id: Option<u64>, error_frame: &str, code: &str) -> String {
    match ack_id {
        Some(id) => ack(namespace, id, &format!(r#"{{"error":{}}}"#, json_string(code))),
        None => event(namespace, "error", error_frame),
    }
}

/// A frame for one socket (an `error`, say) as the event of its own type.
pub fn frame_event(namespace: Namespace, frame_json: &str) -> String {
    let kind = serde_json::from_str::<Value>(frame_json)
        .ok()
        .and_then(|frame| frame.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "error".to_owned());
    event(namespace, &kind, frame_json)
}

/// An error code as it is written on the wire.
pub fn code_name(code: ErrorCode) -> String {
    serde_json::to_string(&code).map(|json| json.trim_matches('"').to_owned()).unwrap_or_default()
}

/// What a socket gets on joining a namespace, after its connect ack: the native `welcome`, the
/// nicks as `activeUsers`, and in `/chat` the second gateway's welcome notice.
pub fn welcome(namespace: Namespace, welcome_json: &str, nick: &str, users: &[String]) -> Vec<String> {
    let users = serde_json::to_string(users).unwrap_or_else(|_| "[]".to_owned());
    let mut packets = vec![event(namespace, "welcome", welcome_json), event(namespace, "activeUsers", &users)];
    if namespace == Namespace::Chat {
        let notice = format!(r#"{{"msg":{},"currUserId":{}}}"#, json_string(&format!("Welcome #{nick}")), json_string(nick));
        packets.push(event(namespace, "message", &notice));
    }
    packets
}

/// A broadcast native frame as the packets of each namespace (`Namespace::ALL` order), built once
/// for all the room's Socket.IO sockets. Every frame becomes the event of its own type with its
/// own payload; `message` gains the fields the gateways' clients read, and joins and leaves the
/// gateways' presence events.
pub fn broadcast(frame_json: &str) -> [Vec<String>; 2] {
    let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(frame_json) else { return [vec![], vec![]] };
    let kind = frame.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let nick = frame.get("nick").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut both = Vec::new();
    let mut chat_only = Vec::new();
    match kind.as_str() {
        "message" => {
            // The room writes `text` as a string (a tombstone has none): no Value to clone.
            let text = frame.get("text").and_then(Value::as_str).map_or(Value::Null, |text| Value::String(text.to_owned()));
            let time = frame.get("at").and_then(Value::as_u64).map_or_else(String::new, clock);
            frame.insert("clientId".to_owned(), Value::String(nick.clone()));
            frame.insert("msg".to_owned(), text);
            frame.insert("user".to_owned(), Value::String(nick));
            frame.insert("time".to_owned(), Value::String(time));
            both.push(("message", json_text(&Value::Object(frame))));
        }
        "joined" | "left" => {
            let (gateway, presence, notice) = if kind == "joined" {
                ("user-joined", "userConnected", format!("{nick} connected to the chat"))
            } else {
                ("user-left", "userDisconnected", format!("~ {nick} disconnected"))
            };
            let said = if kind == "joined" { "New user joined the chat" } else { "User left the chat" };
            both.push((if kind == "joined" { "joined" } else { "left" }, frame_json.to_owned()));
            let gateway_payload = format!(r#"{{"message":{},"clientId":{}}}"#, json_string(&format!("{said}: {nick}")), json_string(&nick));
            both.push((gateway, gateway_payload));
            both.push((presence, json_string(&nick)));
            chat_only.push(format!(r#"{{"msg":{}}}"#, json_string(&notice)));
        }
        "" => return [vec![], vec![]],
        _ => both.push((kind.as_str(), frame_json.to_owned())),
    }
    Namespace::ALL.map(|namespace| {
        let mut packets: Vec<String> = both.iter().map(|(name, payload)| event(namespace, name, payload)).collect();
        if namespace == Namespace::Chat {
            packets.extend(chat_only.iter().map(|payload| event(namespace, "message", payload)));
        }
        packets
    })
}

/// `HH:MM` in UTC of a Unix time in milliseconds.
pub fn clock(at_ms: u64) -> String {
    let minutes = (at_ms / 60_000) % 1_440;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The packets of a long-polling body, separated by `\x1e`; empty records are skipped.
pub fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split(RECORD_SEPARATOR).filter(|packet| !packet.is_empty())
}

/// Packets for one poll answer: everything that piled up, in one body.
pub fn join_payload(packets: &[String]) -> String {
    let mut body = String::with_capacity(packets.iter().map(|p| p.len() + 1).sum());
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            body.push(RECORD_SEPARATOR);
        }
        body.push_str(packet);
    }
    body
}

fn json_string(s: &str) -> String {
    json_text(&Value::String(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame_of(packet: &str) -> Result<Value, ErrorCode> {
        match parse(packet) {
            Inbound::Event { frame, .. } => frame.map(|f| serde_json::from_str(&f).unwrap()),
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn engine_io_packets() {
        assert_eq!(parse("3"), Inbound::Pong);
        assert_eq!(parse("3probe"), Inbound::Pong);
        assert_eq!(parse("2probe"), Inbound::Ping("probe".into()));
        assert_eq!(parse("5"), Inbound::Upgrade);
        assert_eq!(parse("6"), Inbound::Noop);
        assert_eq!(parse("1"), Inbound::Close);
        for bad in ["", "x", "7", "{\"type\":\"message\"}", "4", "49"] {
            assert_eq!(parse(bad), Inbound::Malformed, "{bad:?}");
        }
    }

    #[test]
    fn namespaces_connect_or_are_refused() {
        assert_eq!(parse("40"), Inbound::Connect(Ok(Namespace::Root)));
        assert_eq!(parse(r#"40{"token":"x"}"#), Inbound::Connect(Ok(Namespace::Root)));
        assert_eq!(parse("40/chat,"), Inbound::Connect(Ok(Namespace::Chat)));
        assert_eq!(parse(r#"40/chat,{"a":1}"#), Inbound::Connect(Ok(Namespace::Chat)));
        assert_eq!(parse("40/admin,"), Inbound::Connect(Err("/admin".into())));
        assert_eq!(parse("40/chat2"), Inbound::Connect(Err("/chat2".into())));
        assert_eq!(parse("40/a\"b,"), Inbound::Malformed);
        assert_eq!(unknown_namespace("/admin"), r#"44/admin,{"message":"Invalid namespace"}"#);
        assert_eq!(connect_ack(Namespace::Root, "Ann"), r#"40{"sid":"Ann"}"#);
        assert_eq!(connect_ack(Namespace::Chat, "Ann"), r#"40/chat,{"sid":"Ann"}"#);
        assert_eq!(parse("41/chat,"), Inbound::Disconnect(Namespace::Chat));
        assert_eq!(disconnect(Namespace::Root), "41");
        assert_eq!(disconnect(Namespace::Chat), "41/chat,");
    }

    #[test]
    fn events_become_native_frames() {
        assert_eq!(frame_of(r#"42["message","hi"]"#), Ok(json!({"type":"message","text":"hi"})));
        assert_eq!(frame_of(r#"42["message",{"text":"hi"}]"#), Ok(json!({"type":"message","text":"hi"})));
        assert_eq!(frame_of(r#"42["newMessage",{"text":"hi","clientId":"x"}]"#), Ok(json!({"type":"message","text":"hi","clientId":"x"})));
        assert_eq!(frame_of(r#"42/chat,["nick","Bob"]"#), Ok(json!({"type":"nick","nick":"Bob"})));
        assert_eq!(frame_of(r#"42["typing"]"#), Ok(json!({"type":"typing"})));
        assert_eq!(frame_of(r#"42["edit",{"id":3,"text":"x","type":"nick"}]"#), Ok(json!({"type":"edit","id":3,"text":"x"})));
        for bad in [r#"42[]"#, r#"42[1,"x"]"#, r#"42{"a":1}"#, r#"42["message",1]"#, "42[", r#"42"message""#] {
            assert_eq!(frame_of(bad), Err(ErrorCode::BadJson), "{bad}");
        }
        let huge = format!(r#"42["message","{}"]"#, "a".repeat(MAX_FRAME_BYTES));
        assert_eq!(frame_of(&huge), Err(ErrorCode::TooLong));
        match parse(r#"4212["message","hi"]"#) {
            Inbound::Event { ack, namespace, .. } => assert_eq!((ack, namespace), (Some(12), Namespace::Root)),
            other => panic!("{other:?}"),
        }
        match parse(r#"42/chat,7["message","hi"]"#) {
            Inbound::Event { ack, namespace, .. } => assert_eq!((ack, namespace), (Some(7), Namespace::Chat)),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(r#"421234567890123456["message","hi"]"#), Inbound::Malformed);
        assert_eq!(parse(r#"451-["message",{"_placeholder":true,"num":0}]"#), Inbound::Binary { namespace: Namespace::Root, ack: Some(1) });
        assert_eq!(parse(r#"42/admin,["message","hi"]"#), Inbound::Ignored);
    }

    #[test]
    fn acks_and_errors() {
        assert_eq!(ack(Namespace::Root, 3, r#"{"id":9}"#), r#"433[{"id":9}]"#);
        assert_eq!(ack(Namespace::Chat, 3, r#"{"id":9}"#), r#"43/chat,3[{"id":9}]"#);
        assert_eq!(refused(Namespace::Root, Some(1), "{}", "too_long"), r#"431[{"error":"too_long"}]"#);
        assert_eq!(refused(Namespace::Chat, None, r#"{"type":"error"}"#, "x"), r#"42/chat,["error",{"type":"error"}]"#);
        let [root, chat] = refusal("banned", "You are banned.");
        assert_eq!(root, r#"44{"message":"You are banned.","data":{"code":"banned"}}"#);
        assert!(chat.starts_with("44/chat,{"));
    }

    #[test]
    fn messages_carry_the_gateways_fields_in_both_namespaces() {
        // 2026-11-22 14:05:00 UTC
        let at = 1_795_356_300_000u64;
        let frame = format!(r#"{{"type":"message","id":4,"nick":"Ann","text":"hi","at":{at}}}"#);
        let [root, chat] = broadcast(&frame);
        assert_eq!(root.len(), 1);
        let payload: Value = serde_json::from_str(root[0].strip_prefix("42").unwrap()).unwrap();
        assert_eq!(payload[0], "message");
        assert_eq!(
            payload[1],
            json!({"type":"message","id":4,"nick":"Ann","text":"hi","at":at,"clientId":"Ann","msg":"hi","user":"Ann","time":"14:05"})
        );
        assert_eq!(chat, vec![format!("42/chat,{}", root[0].strip_prefix("42").unwrap())]);
    }

    #[test]
    fn presence_becomes_each_gateways_events() {
        let [root, chat] = broadcast(r#"{"type":"joined","nick":"Ann","at":5}"#);
        assert_eq!(
            root,
            [
                r#"42["joined",{"type":"joined","nick":"Ann","at":5}]"#,
                r#"42["user-joined",{"message":"New user joined the chat: Ann","clientId":"Ann"}]"#,
                r#"42["userConnected","Ann"]"#,
            ]
        );
        assert_eq!(chat.len(), 4);
        assert_eq!(chat[3], r#"42/chat,["message",{"msg":"Ann connected to the chat"}]"#);
        let [root, chat] = broadcast(r#"{"type":"left","nick":"Ann","at":5}"#);
        assert_eq!(root[1], r#"42["user-left",{"message":"User left the chat: Ann","clientId":"Ann"}]"#);
        assert_eq!(root[2], r#"42["userDisconnected","Ann"]"#);
        assert_eq!(chat[3], r#"42/chat,["message",{"msg":"~ Ann disconnected"}]"#);
    }

    #[test]
    fn other_frames_pass_through_under_their_own_type() {
        let frame = r#"{"type":"reactions","id":1,"counts":{}}"#;
        assert_eq!(broadcast(frame)[0], [format!(r#"42["reactions",{frame}]"#)]);
        assert_eq!(broadcast("not json"), [Vec::<String>::new(), vec![]]);
    }

    #[test]
    fn replies_name_their_own_type() {
        assert_eq!(frame_event(Namespace::Chat, r#"{"type":"error","code":"x"}"#), r#"42/chat,["error",{"type":"error","code":"x"}]"#);
        assert_eq!(code_name(ErrorCode::TooLong), "too_long");
    }

    #[test]
    fn welcome_per_namespace() {
        let root = welcome(Namespace::Root, r#"{"type":"welcome"}"#, "Ann", &["Ann".into()]);
        assert_eq!(root, [r#"42["welcome",{"type":"welcome"}]"#, r#"42["activeUsers",["Ann"]]"#]);
        let chat = welcome(Namespace::Chat, r#"{"type":"welcome"}"#, "Ann", &["Ann".into()]);
        assert_eq!(chat[2], r#"42/chat,["message",{"msg":"Welcome #Ann","currUserId":"Ann"}]"#);
    }

    #[test]
    fn heartbeat_vars_and_wakes() {
        let (heartbeat, bad) = Heartbeat::from_vars(|name| match name {
            "SIO_PING_INTERVAL_MS" => Some("500".into()),
            "SIO_PING_TIMEOUT_MS" => Some("soon".into()),
            _ => None,
        });
        assert_eq!(heartbeat, Heartbeat { interval_ms: 500, timeout_ms: 60_000 });
        assert_eq!(bad.len(), 1);
        assert_eq!(heartbeat.next_wake(0, 1_000), None, "a room without Socket.IO sockets never wakes for it");
        assert_eq!(heartbeat.next_wake(3, 1_000), Some(1_500));
        assert_eq!(
            Heartbeat::default().open_packet("abc", true),
            r#"0{"sid":"abc","upgrades":["websocket"],"pingInterval":30000,"pingTimeout":60000,"maxPayload":25024}"#
        );
    }

    #[test]
    fn polling_payloads() {
        let packets: Vec<&str> = split_payload("40\x1e42[\"message\",\"a\"]\x1e\x1e3").collect();
        assert_eq!(packets, ["40", "42[\"message\",\"a\"]", "3"]);
        assert_eq!(join_payload(&["2".into(), "6".into()]), "2\x1e6");
        assert_eq!(clock(0), "00:00");
        assert_eq!(clock(86_399_999), "23:59");
    }
}
