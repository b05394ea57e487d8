//! HTTP routing and request validation for the Worker, as plain data in and out: the Worker
//! hands in the parts of a request and gets back either a route or a `RequestError`, which
//! it turns into a response in one place. A request refused here never reaches a room.

use crate::chat::close;
use crate::chat::history;
use crate::chat::identity::Identity;
use crate::chat::moderation::Action;
use crate::chat::protocol::is_client_token;
use crate::chat::socketio;
use crate::chat::sse::{self, Post};
use crate::edge::origin::AllowedOrigins;
use base64::Engine;
use serde::Serialize;

pub const DEFAULT_ROOM: &str = "lobby";
pub const MAX_ROOM_CHARS: usize = 64;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as it arrived, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub upgrade: Option<&'a str>,
    /// The rest of the WebSocket handshake: `Connection`, `Sec-WebSocket-Key`, `-Version`.
    pub handshake: Handshake<'a>,
    pub origin: Option<&'a str>,
    /// `CF-Connecting-IP`: the client's address, for the budgets its sockets share in a room.
    pub client_address: Option<&'a str>,
    /// `scheme://host[:port]` of the request URL: pages served by this Worker.
    pub own_origin: &'a str,
    /// `Accept` and `Last-Event-ID`: an event stream is asked for, and where it resumes.
    pub accept: Option<&'a str>,
    pub last_event_id: Option<&'a str>,
}

/// The headers of a WebSocket handshake besides `Upgrade` (RFC 6455, section 4.2.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct Handshake<'a> {
    pub connection: Option<&'a str>,
    pub key: Option<&'a str>,
    pub version: Option<&'a str>,
}

impl Handshake<'_> {
    /// `Connection` lists `upgrade`, the key is 16 bytes in base64, and the version is 13:
    /// anything else the runtime would refuse only after the room had accepted the socket.
    pub fn is_valid(&self) -> bool {
        let connection = self.connection.is_some_and(|c| c.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
        let key = self.key.is_some_and(|key| {
            base64::engine::general_purpose::STANDARD.decode(key.trim()).is_ok_and(|bytes| bytes.len() == 16)
        });
        connection && key && self.version.is_some_and(|v| v.trim() == "13")
    }
}

/// A validated request. The Worker hands it to the room's object (see `hop`), so that the
/// object never parses a URL again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Join {
        joining: Joining,
        /// Set for `/socket.io/`: the Socket.IO client's transport and session.
        socketio: Option<EngineRequest>,
    },
    /// `GET /chat/ROOM/events`: the room as an event stream, a member like a socket, with the
    /// same query. `after` is `Last-Event-ID` when an `EventSource` reconnects.
    Events { joining: Joining },
    /// `POST /chat/ROOM/messages` or `/nick` by an event stream's user, named by its session token.
    Post { room: String, post: Post },
    /// `OPTIONS` before a cross-origin post: answered by the Worker, no room is touched.
    Preflight,
    /// An event stream's reader went away: the object sends this to itself. Never routed from a request.
    StreamGone { stream: String },
    Users { room: String },
    History { room: String, window: history::Window },
    /// `POST /chat/ROOM/admin`, before the Worker has read its body into a `Moderate`.
    AdminAction { room: String },
    /// An operator's moderation action, read from an admin request's body.
    Moderate { room: String, action: Action },
    Bans { room: String },
    Audit { room: String },
}

impl Route {
    pub fn room(&self) -> Option<&str> {
        match self {
            Route::Health | Route::Preflight | Route::StreamGone { .. } => None,
            Route::Join { joining: Joining { room, .. }, .. }
            | Route::Events { joining: Joining { room, .. } }
            | Route::Post { room, .. }
            | Route::Users { room }
            | Route::History { room, .. }
            | Route::AdminAction { room }
            | Route::Moderate { room, .. }
            | Route::Bans { room }
            | Route::Audit { room } => Some(room),
        }
    }

    /// Whether this is the operator's admin API, guarded by `ADMIN_TOKEN` rather than tickets.
    pub fn is_admin(&self) -> bool {
        matches!(self, Route::AdminAction { .. } | Route::Moderate { .. } | Route::Bans { .. } | Route::Audit { .. })
    }
}

/// A Socket.IO client's request (Engine.IO 4): its transport, and the session it continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRequest {
    pub transport: Transport,
    /// The Engine.IO session id; none on a handshake.
    pub sid: Option<String>,
    /// A long-polling POST (packets from the client) rather than a GET (waiting for packets).
    pub post: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Websocket,
    Polling,
}

impl Route {
    /// The Socket.IO request this route carries, if it is one.
    pub fn socketio(&self) -> Option<&EngineRequest> {
        match self {
            Route::Join { socketio, .. } => socketio.as_ref(),
            _ => None,
        }
    }
}

/// Every way a request can be refused, with its status and a sentence for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestError {
    BadRoom,
    BadQuery,
    BadLimit,
    BadSince,
    BadAfter,
    BadBefore,
    BadClient,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    BadUpgrade,
    /// A Socket.IO request without `EIO=4` and a known `transport`.
    BadTransport,
    /// A Socket.IO request for an Engine.IO session this room does not hold (any more).
    UnknownSession,
    /// A Socket.IO long-polling POST over `maxPayload`.
    PayloadTooLarge,
    ForbiddenOrigin,
    RoomFull,
    TicketRequired,
    BadTicket,
    TicketExpired,
    WrongRoom,
    Misconfigured,
    Unauthorized,
    BadAction,
    /// An event stream was asked for without `Accept: text/event-stream`.
    NotAcceptable,
    /// A post without the session token of an open event stream in this room.
    BadSession,
    /// The room holds `MAX_ROOM_STREAMS` event streams.
    TooManyStreams,
    /// Over the per-address request budget of the platform's rate limiter.
    RateLimited,
    NoSuchTarget,
    Unavailable,
    Internal,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRoom
            | RequestError::BadQuery
            | RequestError::BadLimit
            | RequestError::BadSince
            | RequestError::BadAfter
            | RequestError::BadBefore
            | RequestError::BadClient
            | RequestError::BadAction
            | RequestError::BadUpgrade
            | RequestError::BadTransport
            | RequestError::UnknownSession => 400,
            RequestError::TicketRequired
            | RequestError::BadTicket
            | RequestError::TicketExpired
            | RequestError::BadSession
            | RequestError::Unauthorized => 401,
            RequestError::ForbiddenOrigin | RequestError::WrongRoom => 403,
            RequestError::NotFound | RequestError::NoSuchTarget => 404,
            RequestError::MethodNotAllowed => 405,
            RequestError::NotAcceptable => 406,
            RequestError::PayloadTooLarge => 413,
            RequestError::UpgradeRequired => 426,
            RequestError::RateLimited | RequestError::TooManyStreams => 429,
            RequestError::Internal => 500,
            RequestError::RoomFull | RequestError::Misconfigured | RequestError::Unavailable => 503,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            RequestError::BadRoom => {
                "Room names are 1 to 64 letters, digits, '_', '.' or '-', and not only dots."
            }
            RequestError::BadQuery => "The query string is not valid percent-encoded UTF-8.",
            RequestError::BadLimit => "limit must be a whole number from 1 to 100.",
            RequestError::BadSince => "since must be a message id: a whole number of zero or more.",
            RequestError::BadAfter => "after must be a sequence number (a whole number of zero or more), and not given with since.",
            RequestError::BadBefore => "before must be a message id (a whole number of zero or more), and not given with since or after.",
            RequestError::BadClient => "client must be 1 to 64 letters, digits, '_' or '-'.",
            RequestError::NotFound => "Nothing here. Chat lives at /chat/ROOM.",
            RequestError::MethodNotAllowed => {
                "Only GET is supported here (POST for /chat/ROOM/admin, /chat/ROOM/messages and /chat/ROOM/nick)."
            }
            RequestError::NotAcceptable => "This is an event stream: ask for it with Accept: text/event-stream.",
            RequestError::BadSession => {
                "Posts need the token of your open event stream (its session event) in X-Edge-Chat-Session."
            }
            RequestError::TooManyStreams => "This room has as many event streams as it takes: try again later.",
            RequestError::UpgradeRequired => "This is a WebSocket endpoint: connect with Upgrade: websocket.",
            RequestError::BadUpgrade => {
                "Not a valid WebSocket handshake: it needs Connection: Upgrade, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key."
            }
            RequestError::BadTransport => "Socket.IO clients connect with EIO=4 and transport=websocket or polling.",
            RequestError::PayloadTooLarge => "A Socket.IO POST may carry at most 25024 bytes of packets.",
            RequestError::UnknownSession => "No such Socket.IO session in this room (it ended): connect again.",
            RequestError::ForbiddenOrigin => "Pages from this origin may not open chat sockets (see ALLOWED_ORIGINS).",
            RequestError::RoomFull => "This room is full: try again later or pick another room.",
            RequestError::TicketRequired => "This room is private: connect with a ticket from the application.",
            RequestError::BadTicket => "That ticket is not valid: ask the application for a new one.",
            RequestError::TicketExpired => "That ticket has expired: ask the application for a new one.",
            RequestError::WrongRoom => "That ticket does not open this room.",
            RequestError::Misconfigured => "This room cannot check tickets right now: the operator has been told.",
            RequestError::Unauthorized => "The admin API needs Authorization: Bearer with the operator's ADMIN_TOKEN.",
            RequestError::BadAction => {
                "Send a JSON action: {\"action\":\"delete\",\"id\":I}, kick/ban/unban/mute with \"nick\" (and \"duration\" in seconds), {\"action\":\"slow\",\"seconds\":N} or {\"action\":\"clear\"}."
            }
            RequestError::NoSuchTarget => "There is no such message or person in this room.",
            RequestError::RateLimited => "Too many requests from your address: wait a minute and try again.",
            RequestError::Unavailable => "This room cannot read its storage right now. Please try again.",
            RequestError::Internal => "Something went wrong on our side. Please try again.",
        }
    }

    /// The close code that refuses a WebSocket upgrade for this reason, where a browser could
    /// not read the HTTP status: the Worker accepts the socket, sends `to_error_frame` and
    /// closes it with this code. 4401 and 4403 mean "do not reconnect with the same ticket".
    pub fn close_code(self) -> Option<u16> {
        match self {
            RequestError::TicketRequired | RequestError::BadTicket | RequestError::TicketExpired => Some(close::UNAUTHORIZED),
            RequestError::WrongRoom => Some(close::FORBIDDEN),
            RequestError::RateLimited => Some(close::TRY_LATER),
            _ => None,
        }
    }

    /// The `error` frame a refused socket receives before its close.
    pub fn to_error_frame(self) -> String {
        #[derive(Serialize)]
        struct Frame {
            r#type: &'static str,
            code: RequestError,
            message: &'static str,
        }
        serde_json::to_string(&Frame { r#type: "error", code: self, message: self.message() })
            .expect("error frames always serialise")
    }

    /// The JSON body sent with the status: `{"error":{"code":..,"message":..}}`.
    pub fn to_json(self) -> String {
        #[derive(Serialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Serialize)]
        struct Detail {
            code: RequestError,
            message: &'static str,
        }
        serde_json::to_string(&Body { error: Detail { code: self, message: self.message() } })
            .expect("error bodies always serialise")
    }
}

pub fn route(request: &RequestParts<'_>, allowed: &AllowedOrigins) -> Result<Route, RequestError> {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["health"] => Route::Health,
        ["chat"] => join(DEFAULT_ROOM.to_owned(), request)?,
        ["chat", room] => join(room_name(room)?, request)?,
        ["chat", room, "users"] => Route::Users { room: room_name(room)? },
        ["chat", room, "history"] => {
            let room = room_name(room)?;
            let query = Query::parse(request.query)?;
            let limit = history::parse_limit(query.get("limit")).ok_or(RequestError::BadLimit)?;
            let (since, after) = resume(&query)?;
            let before = number(&query, "before", RequestError::BadBefore)?;
            let window = match (since, after, before) {
                (None, None, Some(before)) => history::Window::Before { before, limit },
                (_, _, Some(_)) => return Err(RequestError::BadBefore),
                (_, Some(after), None) => history::Window::Changed { after, limit },
                (Some(since), None, None) => history::Window::After { since, limit },
                (None, None, None) => history::Window::Latest { limit },
            };
            Route::History { room, window }
        }
        [socketio::PATH] | [socketio::PATH, ""] => return socket_io(request, allowed),
        ["chat", room, "events"] => events(room_name(room)?, request)?,
        ["chat", room, "messages"] => Route::Post { room: room_name(room)?, post: Post::Message },
        ["chat", room, "nick"] => Route::Post { room: room_name(room)?, post: Post::Nick },
        ["chat", room, "admin"] => Route::AdminAction { room: room_name(room)? },
        ["chat", room, "admin", "bans"] => Route::Bans { room: room_name(room)? },
        ["chat", room, "admin", "audit"] => Route::Audit { room: room_name(room)? },
        _ => return Err(RequestError::NotFound),
    };
    let posted = matches!(route, Route::AdminAction { .. } | Route::Post { .. });
    if posted && request.method == "OPTIONS" && matches!(route, Route::Post { .. }) {
        return if allowed.admits(request.origin, request.own_origin) {
            Ok(Route::Preflight)
        } else {
            Err(RequestError::ForbiddenOrigin)
        };
    }
    if request.method != if posted { "POST" } else { "GET" } {
        return Err(RequestError::MethodNotAllowed);
    }
    if matches!(route, Route::Events { .. } | Route::Post { .. }) && !allowed.admits(request.origin, request.own_origin) {
        return Err(RequestError::ForbiddenOrigin);
    }
    if matches!(route, Route::Events { .. }) && !request.accept.is_some_and(|a| a.contains("text/event-stream")) {
        return Err(RequestError::NotAcceptable);
    }
    if matches!(route, Route::Join { .. }) {
        websocket_upgrade(request)?;
        if !allowed.admits(request.origin, request.own_origin) {
            return Err(RequestError::ForbiddenOrigin);
        }
    }
    Ok(route)
}

/// A WebSocket join must be an upgrade, with a valid handshake.
fn websocket_upgrade(request: &RequestParts<'_>) -> Result<(), RequestError> {
    if !request.upgrade.is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket")) {
        return Err(RequestError::UpgradeRequired);
    }
    if !request.handshake.is_valid() {
        return Err(RequestError::BadUpgrade);
    }
    Ok(())
}

fn join(room: String, request: &RequestParts<'_>) -> Result<Route, RequestError> {
    Ok(Route::Join { joining: joining(room, request)?, socketio: None })
}

/// What a join asks for, the same for a socket, a Socket.IO client and an event stream: its room,
/// its query, the client's address, and the identity its ticket gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joining {
    pub room: String,
    pub nick: Option<String>,
    /// `?since=ID`: the welcome's history is what came after message ID.
    pub since: Option<u64>,
    /// `?after=SEQ`: the welcome's history is every message changed after SEQ (never with `since`).
    pub after: Option<u64>,
    /// `?client=ID`: the client instance, the sender key of an anonymous socket.
    pub client_id: Option<String>,
    /// The client's address ("" when the request had none): the room keys its budgets and bans by
    /// salted hashes of it and neither logs nor sends it.
    pub client: String,
    /// Set by the Worker once a ticket checked out; never parsed from the request itself.
    pub identity: Option<Identity>,
}

fn joining(room: String, request: &RequestParts<'_>) -> Result<Joining, RequestError> {
    let query = Query::parse(request.query)?;
    let client = request.client_address.unwrap_or_default().to_owned();
    let (since, after) = resume(&query)?;
    let client_id = match query.get("client") {
        Some(id) if is_client_token(id) => Some(id.to_owned()),
        Some(_) => return Err(RequestError::BadClient),
        None => None,
    };
    let nick = query.get("nick").map(str::to_owned);
    Ok(Joining { room, nick, since, after, client_id, client, identity: None })
}

/// `/socket.io/?EIO=4&transport=websocket|polling&room=R[&sid=S]`: a Socket.IO client, joined
/// like `/chat/ROOM` (room from the query, default `lobby`; `nick`, `since`, `after`, `client`
/// and `ticket` as there). The same Origin policy holds for both transports; polling answers
/// carry CORS.
fn socket_io(request: &RequestParts<'_>, allowed: &AllowedOrigins) -> Result<Route, RequestError> {
    let query = Query::parse(request.query)?;
    let transport = match (query.get("EIO"), query.get("transport")) {
        (Some("4"), Some("websocket")) => Transport::Websocket,
        (Some("4"), Some("polling")) => Transport::Polling,
        _ => return Err(RequestError::BadTransport),
    };
    let room = match query.get("room") {
        Some(room) => valid_room(room.to_owned())?,
        None => DEFAULT_ROOM.to_owned(),
    };
    let sid = match query.get("sid") {
        Some(sid) if sid.len() <= 64 && sid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')) => {
            Some(sid.to_owned())
        }
        Some(_) => return Err(RequestError::UnknownSession),
        None => None,
    };
    let post = match (transport, request.method) {
        (Transport::Polling, "POST") if sid.is_some() => true,
        (_, "GET") => false,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    if transport == Transport::Websocket {
        websocket_upgrade(request)?;
    }
    if !allowed.admits(request.origin, request.own_origin) {
        return Err(RequestError::ForbiddenOrigin);
    }
    let socketio = Some(EngineRequest { transport, sid, post });
    Ok(Route::Join { joining: joining(room, request)?, socketio })
}

/// An event stream joins as a socket would, with the same query; it resumes from
/// `Last-Event-ID` (a seq, as `after`) when an `EventSource` reconnects.
fn events(room: String, request: &RequestParts<'_>) -> Result<Route, RequestError> {
    let mut joining = joining(room, request)?;
    (joining.since, joining.after) =
        sse::resume_from(request.last_event_id, joining.since, joining.after).map_err(|()| RequestError::BadAfter)?;
    Ok(Route::Events { joining })
}

/// The ticket a request presents: `?ticket=` (the only way a browser's WebSocket can send
/// one), else an `Authorization: Bearer` header.
pub fn presented_ticket(query: Option<&str>, authorization: Option<&str>) -> Result<Option<String>, RequestError> {
    match Query::parse(query)?.get("ticket") {
        Some(ticket) => Ok(Some(ticket.to_owned())),
        None => Ok(bearer(authorization)),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(authorization: Option<&str>) -> Option<String> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// `since` (a message id) or `after` (a sequence number), never both.
fn resume(query: &Query) -> Result<(Option<u64>, Option<u64>), RequestError> {
    let since = number(query, "since", RequestError::BadSince)?;
    let after = number(query, "after", RequestError::BadAfter)?;
    if since.is_some() && after.is_some() {
        return Err(RequestError::BadAfter);
    }
    Ok((since, after))
}

fn number(query: &Query, key: &str, error: RequestError) -> Result<Option<u64>, RequestError> {
    query.get(key).map(|raw| raw.parse().map_err(|_| error)).transpose()
}

/// Decodes and checks one room segment of the path.
pub fn room_name(segment: &str) -> Result<String, RequestError> {
    valid_room(percent_decode(segment).ok_or(RequestError::BadRoom)?)
}

/// Checks a decoded room name.
fn valid_room(room: String) -> Result<String, RequestError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let only_dots = room.chars().all(|c| c == '.');
    if room.is_empty() || room.len() > MAX_ROOM_CHARS || !room.chars().all(allowed) || only_dots {
        return Err(RequestError::BadRoom);
    }
    Ok(room)
}

/// The decoded query string. The first of repeated keys wins; unknown keys are ignored.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Result<Query, RequestError> {
        let mut pairs = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " ")).ok_or(RequestError::BadQuery);
            pairs.push((decode(key)?, decode(value)?));
        }
        Ok(Query(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Percent-decodes into UTF-8. A malformed escape or bytes that are not UTF-8 (overlong
/// forms included) give `None`.
pub fn percent_decode(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::history::Window;

    const OWN: &str = "http://localhost:8787";

    const HANDSHAKE: Handshake<'static> =
        Handshake { connection: Some("Upgrade"), key: Some("dGhlIHNhbXBsZSBub25jZQ=="), version: Some("13") };

    fn parts<'a>(path: &'a str, query: Option<&'a str>) -> RequestParts<'a> {
        RequestParts {
            method: "GET",
            path,
            query,
            upgrade: None,
            handshake: Handshake::default(),
            origin: None,
            client_address: Some("192.0.2.1"),
            own_origin: OWN,
            accept: None,
            last_event_id: None,
        }
    }

    fn get(path: &str, query: Option<&str>) -> Result<Route, RequestError> {
        route(&parts(path, query), &AllowedOrigins::default())
    }

    fn upgrade(path: &str, query: Option<&str>, origin: Option<&str>) -> Result<Route, RequestError> {
        let parts = RequestParts { upgrade: Some("websocket"), handshake: HANDSHAKE, origin, ..parts(path, query) };
        route(&parts, &AllowedOrigins::parse("https://friend.example"))
    }

    fn joining(room: &str, nick: Option<&str>, since: Option<u64>) -> Joining {
        Joining {
            room: room.into(),
            nick: nick.map(Into::into),
            since,
            after: None,
            client_id: None,
            client: "192.0.2.1".into(),
            identity: None,
        }
    }

    fn join_route(room: &str, nick: Option<&str>, since: Option<u64>) -> Route {
        Route::Join { joining: joining(room, nick, since), socketio: None }
    }

    #[test]
    fn socket_io_routes() {
        let sio = |transport, sid: Option<&str>, post| {
            Some(EngineRequest { transport, sid: sid.map(Into::into), post })
        };
        let with =
            |room: &str, nick: Option<&str>, socketio| Route::Join { joining: joining(room, nick, None), socketio };
        let ws = |query| upgrade("/socket.io/", Some(query), None);
        assert_eq!(ws("EIO=4&transport=websocket"), Ok(with("lobby", None, sio(Transport::Websocket, None, false))));
        assert_eq!(
            ws("EIO=4&transport=websocket&room=dev&nick=Ann&sid=abc"),
            Ok(with("dev", Some("Ann"), sio(Transport::Websocket, Some("abc"), false)))
        );
        assert_eq!(ws("EIO=3&transport=websocket"), Err(RequestError::BadTransport));
        assert_eq!(ws("EIO=4&transport=webtransport"), Err(RequestError::BadTransport));
        assert_eq!(ws("EIO=4&transport=websocket&room=a%252Fb"), Err(RequestError::BadRoom));
        assert_eq!(ws("EIO=4&transport=websocket&room=.."), Err(RequestError::BadRoom));
        assert_eq!(ws("EIO=4&transport=websocket&sid=a%22b"), Err(RequestError::UnknownSession));
        assert_eq!(upgrade("/socket.io/", Some("EIO=4&transport=websocket"), Some("https://evil.example")), Err(RequestError::ForbiddenOrigin));
        assert_eq!(get("/socket.io/", Some("EIO=4&transport=websocket")), Err(RequestError::UpgradeRequired));
        let poll = get("/socket.io/", Some("EIO=4&transport=polling&room=r"));
        assert_eq!(poll, Ok(with("r", None, sio(Transport::Polling, None, false))));
        let post = |query| route(&RequestParts { method: "POST", ..parts("/socket.io/", Some(query)) }, &AllowedOrigins::default());
        assert_eq!(post("EIO=4&transport=polling&sid=s1"), Ok(with("lobby", None, sio(Transport::Polling, Some("s1"), true))));
        assert_eq!(post("EIO=4&transport=polling"), Err(RequestError::MethodNotAllowed), "a handshake is a GET");
        let origin = RequestParts { origin: Some("https://evil.example"), ..parts("/socket.io/", Some("EIO=4&transport=polling")) };
        assert_eq!(route(&origin, &AllowedOrigins::default()), Err(RequestError::ForbiddenOrigin));
        assert_eq!(get("/socket.io/x", Some("EIO=4&transport=polling")), Err(RequestError::NotFound));
        match ws("EIO=4&transport=websocket&client=tab-1&after=7") {
            Ok(Route::Join { joining: Joining { client_id, after, .. }, .. }) => {
                assert_eq!((client_id.as_deref(), after), (Some("tab-1"), Some(7)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ws("EIO=4&transport=websocket&client=a%20b"), Err(RequestError::BadClient));
        assert_eq!(ws("EIO=4&transport=websocket&since=1&after=2"), Err(RequestError::BadAfter));
    }

    #[test]
    fn chat_routes() {
        assert_eq!(upgrade("/chat", None, None), Ok(join_route("lobby", None, None)));
        assert_eq!(
            upgrade("/chat/dev-team.2", Some("nick=Ann&since=42&other=x"), None),
            Ok(join_route("dev-team.2", Some("Ann"), Some(42)))
        );
        assert_eq!(get("/chat/a/users", None), Ok(Route::Users { room: "a".into() }));
        let history = |window| Ok(Route::History { room: "a".into(), window });
        assert_eq!(get("/chat/a/history", None), history(Window::Latest { limit: 50 }));
        assert_eq!(get("/chat/a/history", Some("limit=7")), history(Window::Latest { limit: 7 }));
        assert_eq!(get("/chat/a/history", Some("since=9")), history(Window::After { since: 9, limit: 50 }));
        assert_eq!(get("/chat/a/history", Some("since=x")), Err(RequestError::BadSince));
        assert_eq!(get("/chat/a/history", Some("before=9&limit=3")), history(Window::Before { before: 9, limit: 3 }));
        assert_eq!(get("/chat/a/history", Some("after=4")), history(Window::Changed { after: 4, limit: 50 }));
        assert_eq!(get("/chat/a/history", Some("before=x")), Err(RequestError::BadBefore));
        assert_eq!(get("/chat/a/history", Some("before=9&since=1")), Err(RequestError::BadBefore));
        assert_eq!(get("/chat/a/history", Some("after=1&since=1")), Err(RequestError::BadAfter));
        assert_eq!(get("/chat/a/history", Some("after=-1")), Err(RequestError::BadAfter));
        assert_eq!(get("/health", None), Ok(Route::Health));
    }

    #[test]
    fn upgrades_take_a_client_id_and_resume_by_id_or_by_seq() {
        match upgrade("/chat/a", Some("client=tab-1_X&after=12"), None) {
            Ok(Route::Join { joining: Joining { client_id, after, since, .. }, .. }) => {
                assert_eq!((client_id.as_deref(), after, since), (Some("tab-1_X"), Some(12), None))
            }
            other => panic!("{other:?}"),
        }
        for bad in ["", "a%20b", "%C3%A9", &"x".repeat(65)] {
            assert_eq!(upgrade("/chat/a", Some(&format!("client={bad}")), None), Err(RequestError::BadClient), "{bad:?}");
        }
        assert_eq!(upgrade("/chat/a", Some("since=1&after=2"), None), Err(RequestError::BadAfter));
        assert_eq!(upgrade("/chat/a", Some("after=x"), None), Err(RequestError::BadAfter));
    }

    #[test]
    fn chat_without_upgrade_is_426() {
        assert_eq!(get("/chat/a", None), Err(RequestError::UpgradeRequired));
        assert_eq!(get("/chat", None), Err(RequestError::UpgradeRequired));
        assert_eq!(RequestError::UpgradeRequired.status(), 426);
    }

    #[test]
    fn bad_rooms_are_400_whatever_the_route() {
        let long = "r".repeat(65);
        for room in [
            "", "a%2Fb", "..", ".", "%2E%2E", "a%00b", "%C0%AE", "caf%C3%A9", "%ZZ", "%", "a%0D%0ASet-Cookie:x", "a b",
            "a%20b", long.as_str(),
        ] {
            assert_eq!(upgrade(&format!("/chat/{room}"), None, None), Err(RequestError::BadRoom), "{room:?}");
            assert_eq!(get(&format!("/chat/{room}/users"), None), Err(RequestError::BadRoom), "{room:?}");
        }
        assert_eq!(upgrade(&format!("/chat/{}", "r".repeat(64)), None, None).unwrap().room().unwrap().len(), 64);
        assert_eq!(RequestError::BadRoom.status(), 400);
    }

    #[test]
    fn room_names_are_percent_decoded() {
        assert_eq!(room_name("a%2Db"), Ok("a-b".into()));
        assert_eq!(room_name("...x"), Ok("...x".into()));
    }

    #[test]
    fn bad_queries_are_400() {
        assert_eq!(upgrade("/chat/a", Some("since=abc"), None), Err(RequestError::BadSince));
        assert_eq!(upgrade("/chat/a", Some("since=-1"), None), Err(RequestError::BadSince));
        assert_eq!(upgrade("/chat/a", Some("nick=%FF"), None), Err(RequestError::BadQuery));
        assert_eq!(get("/chat/a/history", Some("limit=0")), Err(RequestError::BadLimit));
        assert_eq!(get("/chat/a/history", Some("limit=101")), Err(RequestError::BadLimit));
    }

    #[test]
    fn nick_in_the_query_is_decoded_and_left_for_the_room_to_judge() {
        let route = upgrade("/chat/a", Some("nick=%3Cb%3E+x"), None).unwrap();
        assert_eq!(route, join_route("a", Some("<b> x"), None));
    }

    #[test]
    fn a_join_without_an_address_gets_the_shared_empty_one() {
        let parts = RequestParts { upgrade: Some("websocket"), handshake: HANDSHAKE, client_address: None, ..parts("/chat/a", None) };
        let Ok(Route::Join { joining: Joining { client, .. }, .. }) = route(&parts, &AllowedOrigins::default()) else {
            panic!("a join")
        };
        assert_eq!(client, "");
    }

    #[test]
    fn handshakes_are_checked_before_any_room_is_touched() {
        let with = |handshake| {
            let parts = RequestParts { upgrade: Some("websocket"), handshake, ..parts("/chat/a", None) };
            route(&parts, &AllowedOrigins::default())
        };
        assert!(with(HANDSHAKE).is_ok());
        let variants = [
            Handshake { connection: None, ..HANDSHAKE },
            Handshake { connection: Some("keep-alive"), ..HANDSHAKE },
            Handshake { key: None, ..HANDSHAKE },
            Handshake { key: Some(""), ..HANDSHAKE },
            Handshake { key: Some("not base64 at all!!!!!!!"), ..HANDSHAKE },
            Handshake { key: Some("c2hvcnQ="), ..HANDSHAKE },
            Handshake { key: Some("dGhlIHNhbXBsZSBub25jZSE="), ..HANDSHAKE },
            Handshake { version: None, ..HANDSHAKE },
            Handshake { version: Some("8"), ..HANDSHAKE },
            Handshake { version: Some("13, 8"), ..HANDSHAKE },
        ];
        for handshake in variants {
            assert_eq!(with(handshake), Err(RequestError::BadUpgrade), "{handshake:?}");
        }
        for connection in ["keep-alive, Upgrade", "UPGRADE", " upgrade "] {
            assert!(with(Handshake { connection: Some(connection), ..HANDSHAKE }).is_ok(), "{connection}");
        }
        assert_eq!(RequestError::BadUpgrade.status(), 400);
        assert_eq!(RequestError::Unavailable.status(), 503);
        // Without Upgrade at all it is still 426, and bad rooms are still bad_room.
        assert_eq!(get("/chat/a", None), Err(RequestError::UpgradeRequired));
        let bad_room = RequestParts { upgrade: Some("websocket"), ..parts("/chat/a%2Fb", None) };
        assert_eq!(route(&bad_room, &AllowedOrigins::default()), Err(RequestError::BadRoom));
    }

    #[test]
    fn origins_are_checked_on_upgrades() {
        assert!(upgrade("/chat/a", None, Some(OWN)).is_ok());
        assert!(upgrade("/chat/a", None, Some("https://friend.example")).is_ok());
        assert_eq!(upgrade("/chat/a", None, Some("https://evil.example")), Err(RequestError::ForbiddenOrigin));
        assert_eq!(RequestError::ForbiddenOrigin.status(), 403);
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        for path in ["/", "/chat/a/b", "/chat/a/users/x", "/healthz", "/chat/a/history/"] {
            assert_eq!(get(path, None), Err(RequestError::NotFound), "{path}");
        }
        let post = RequestParts { method: "POST", ..parts("/chat/a/users", None) };
        assert_eq!(route(&post, &AllowedOrigins::default()), Err(RequestError::MethodNotAllowed));
    }

    #[test]
    fn error_bodies_are_json_with_code_and_message() {
        let body: serde_json::Value = serde_json::from_str(&RequestError::BadRoom.to_json()).unwrap();
        assert_eq!(body["error"]["code"], "bad_room");
        assert_eq!(body["error"]["message"], RequestError::BadRoom.message());
    }

    #[test]
    fn tickets_come_from_the_query_or_a_bearer_header() {
        assert_eq!(presented_ticket(Some("nick=a&ticket=x.y.z"), Some("Bearer other")), Ok(Some("x.y.z".into())));
        assert_eq!(presented_ticket(None, Some("Bearer  a.b.c ")), Ok(Some("a.b.c".into())));
        assert_eq!(presented_ticket(None, Some("bearer a.b.c")), Ok(Some("a.b.c".into())));
        assert_eq!(presented_ticket(None, Some("Basic dXNlcg==")), Ok(None));
        assert_eq!(presented_ticket(Some("nick=a"), None), Ok(None));
        assert_eq!(presented_ticket(Some("ticket=%FF"), None), Err(RequestError::BadQuery));
    }

    #[test]
    fn refused_upgrades_close_with_codes_a_browser_can_read() {
        for code in [RequestError::TicketRequired, RequestError::BadTicket, RequestError::TicketExpired] {
            assert_eq!((code.status(), code.close_code()), (401, Some(4401)));
        }
        assert_eq!((RequestError::WrongRoom.status(), RequestError::WrongRoom.close_code()), (403, Some(4403)));
        assert_eq!(RequestError::Misconfigured.status(), 503);
        assert_eq!((RequestError::RateLimited.status(), RequestError::RateLimited.close_code()), (429, Some(4429)));
        let frame: serde_json::Value = serde_json::from_str(&RequestError::WrongRoom.to_error_frame()).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["code"], "wrong_room");
        assert_eq!(frame["message"], RequestError::WrongRoom.message());
    }

    #[test]
    fn admin_routes_take_their_own_methods() {
        let post = |path| {
            let parts = RequestParts { method: "POST", ..parts(path, None) };
            route(&parts, &AllowedOrigins::default())
        };
        assert_eq!(post("/chat/a/admin"), Ok(Route::AdminAction { room: "a".into() }));
        assert_eq!(get("/chat/a/admin", None), Err(RequestError::MethodNotAllowed));
        assert_eq!(get("/chat/a/admin/bans", None), Ok(Route::Bans { room: "a".into() }));
        assert_eq!(get("/chat/a/admin/audit", None), Ok(Route::Audit { room: "a".into() }));
        assert_eq!(post("/chat/a/admin/bans"), Err(RequestError::MethodNotAllowed));
        assert_eq!(post("/chat/a%2F/admin"), Err(RequestError::BadRoom));
        assert!(Route::Bans { room: "a".into() }.is_admin() && !Route::Users { room: "a".into() }.is_admin());
    }

    #[test]
    fn event_streams_join_like_sockets_and_resume_from_last_event_id() {
        let stream = |query, accept, last_event_id, origin| {
            let parts = RequestParts { accept, last_event_id, origin, ..parts("/chat/a/events", query) };
            route(&parts, &AllowedOrigins::parse("https://friend.example"))
        };
        let events = |nick: Option<&str>, since, after, client_id: Option<&str>| Route::Events {
            joining: Joining { after, client_id: client_id.map(Into::into), ..joining("a", nick, since) },
        };
        let sse = Some("text/event-stream");
        assert_eq!(stream(Some("nick=Ann&since=4"), sse, None, None), Ok(events(Some("Ann"), Some(4), None, None)));
        assert_eq!(stream(Some("after=4&client=t1"), sse, None, None), Ok(events(None, None, Some(4), Some("t1"))));
        // Last-Event-ID is a seq: it resumes as `after`, over whatever the query said.
        assert_eq!(stream(Some("since=4"), sse, Some("9"), None), Ok(events(None, None, Some(9), None)));
        assert_eq!(stream(Some("after=4"), sse, Some("9"), None), Ok(events(None, None, Some(9), None)));
        assert_eq!(stream(None, sse, Some("nine"), None), Err(RequestError::BadAfter));
        assert_eq!(stream(Some("client=a%20b"), sse, None, None), Err(RequestError::BadClient));
        assert_eq!(stream(Some("since=1&after=2"), sse, None, None), Err(RequestError::BadAfter));
        assert_eq!(stream(None, Some("text/html"), None, None), Err(RequestError::NotAcceptable));
        assert_eq!(stream(None, None, None, None), Err(RequestError::NotAcceptable));
        assert_eq!(stream(None, sse, None, Some("https://evil.example")), Err(RequestError::ForbiddenOrigin));
        assert!(stream(None, sse, None, Some("https://friend.example")).is_ok());
        assert_eq!(RequestError::NotAcceptable.status(), 406);
        assert_eq!(RequestError::TooManyStreams.status(), 429);
    }

    #[test]
    fn posts_take_post_and_a_preflight() {
        let with = |method, path, origin| {
            let parts = RequestParts { method, origin, ..parts(path, None) };
            route(&parts, &AllowedOrigins::parse("https://friend.example"))
        };
        let post = |post| Ok(Route::Post { room: "a".into(), post });
        assert_eq!(with("POST", "/chat/a/messages", None), post(Post::Message));
        assert_eq!(with("POST", "/chat/a/nick", Some(OWN)), post(Post::Nick));
        assert_eq!(with("GET", "/chat/a/messages", None), Err(RequestError::MethodNotAllowed));
        assert_eq!(with("POST", "/chat/a/messages", Some("https://evil.example")), Err(RequestError::ForbiddenOrigin));
        assert_eq!(with("OPTIONS", "/chat/a/messages", Some("https://friend.example")), Ok(Route::Preflight));
        assert_eq!(with("OPTIONS", "/chat/a/nick", Some("https://evil.example")), Err(RequestError::ForbiddenOrigin));
        assert_eq!(with("POST", "/chat/a%2F/messages", None), Err(RequestError::BadRoom));
        assert_eq!(RequestError::BadSession.status(), 401);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), Some("a b".into()));
        assert_eq!(percent_decode("%e2%9c%93"), Some("✓".into()));
        assert_eq!(percent_decode("%C0%AF"), None, "overlong '/' is not UTF-8");
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
