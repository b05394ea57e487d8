//! The Worker: validates each request (see `routes`) and hands chat requests to the Durable
//! Object of their room, one object per room name. Refusals are answered here, as JSON with
//! the right status, so a bad request never wakes a room. Static pages are served by the
//! assets binding before this code runs.

use crate::edge::access::AccessPolicy;
use crate::edge::origin::AllowedOrigins;
use crate::edge::request_url::RequestUrl;
use crate::edge::routes::{self, Handshake, RequestError, RequestParts, Route, Transport};
use crate::chat::socketio::MAX_PAYLOAD;
use crate::runtime::chat_room::socketio;
use crate::chat::close;
use crate::chat::moderation;
use crate::chat::outbox::{offers_batch, BATCH_PROTOCOL};
use crate::chat::protocol::{ErrorCode, MAX_FRAME_BYTES};
use crate::chat::sse::{self, Post};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use subtle::ConstantTimeEq;
use std::sync::atomic::{AtomicBool, Ordering};
use worker::js_sys::{self, Promise};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{event, web_sys, Context, Env, Headers, Request, Response, WebSocketPair};

#[wasm_bindgen]
extern "C" {
    /// The rate limiting binding, bound here because `worker`'s `limit` passes its argument and
    /// result through serde_wasm_bindgen, which costs the module ~30 KB.
    type RawLimiter;

    #[wasm_bindgen(method, catch)]
    fn limit(this: &RawLimiter, options: &js_sys::Object) -> Result<Promise, JsValue>;
}

/// The header that carries the validated route from the Worker to the room's object.
pub const ROUTE_HEADER: &str = "x-edge-chat-route";
/// The WebSocket subprotocols a client offers, and the one the room answers with.
pub const PROTOCOL_HEADER: &str = "sec-websocket-protocol";

/// Logs a panic's message, in builds with the prebuilt std. Where scripts/toolchain.sh builds std
/// with panic=immediate-abort, a panic traps at once without a message: no hook to install.
#[event(start)]
fn start() {
    #[cfg(not(panic = "immediate-abort"))]
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(request: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    match handle(request, &env).await {
        Ok(response) => Ok(response),
        Err(error) => error_response(error),
    }
}

async fn handle(mut request: Request, env: &Env) -> Result<Response, RequestError> {
    // The raw string, not `request.url()`, which would bring in the `url` crate (see `request_url`).
    let raw_url = request.inner().url();
    let url = RequestUrl::parse(&raw_url).ok_or("no scheme").map_err(internal("reading the request URL"))?;
    let headers = request.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    let (upgrade, origin, protocols) = (header("upgrade"), header("origin"), header("sec-websocket-protocol"));
    // Under wrangler dev these are the dev proxy's own (it re-does the handshake, and answers
    // a broken one itself); deployed, they are the client's.
    let (connection, key, version) = (header("connection"), header("sec-websocket-key"), header("sec-websocket-version"));
    // Set by Cloudflare's edge (and by wrangler dev locally) to the client's address.
    let client_address = header("cf-connecting-ip");
    let content_length = header("content-length");
    let (accept, last_event_id) = (header("accept"), header("last-event-id"));
    let method = request.method();
    let parts = RequestParts {
        method: method.as_ref(),
        path: &url.path,
        query: url.query.as_deref(),
        upgrade: upgrade.as_deref(),
        handshake: Handshake { connection: connection.as_deref(), key: key.as_deref(), version: version.as_deref() },
        origin: origin.as_deref(),
        client_address: client_address.as_deref(),
        own_origin: &url.origin,
        accept: accept.as_deref(),
        last_event_id: last_event_id.as_deref(),
    };
    let allowed = AllowedOrigins::parse(&env.var("ALLOWED_ORIGINS").map(|v| v.to_string()).unwrap_or_default());
    let mut route = routes::route(&parts, &allowed)?;
    let cors = allowed.cors_origin(origin.as_deref(), &url.origin);
    if matches!(route, Route::Preflight) {
        return preflight(cors);
    }
    let Some(room) = route.room().map(str::to_owned) else {
        // The client library reads health to decide on its transport, also from embedding pages.
        let health = json_response(200, r#"{"ok":true}"#.to_owned()).map_err(internal("answering health"))?;
        return match cors {
            Some(cors) => allow_origin(health, cors),
            None => Ok(health),
        };
    };
    if !within_request_budget(env, client_address.as_deref()).await {
        return match route {
            Route::Join { .. } => refuse_join(&route, RequestError::RateLimited, protocols.as_deref()),
            _ => Err(RequestError::RateLimited),
        };
    }
    let (authorization, session) = (header("authorization"), header(sse::SESSION_HEADER));
    let mut body = None;
    if let Route::Post { post, .. } = &route {
        // The session token stands for the stream's admission, ticket and all.
        let frame = match read_post(&mut request, *post).await? {
            Ok(frame) => frame,
            Err(code) => return json_response(sse::status_of(code), sse::error_body(code)).map_err(internal("refusing a post")),
        };
        body = Some(frame);
    } else if route.is_admin() {
        check_admin_token(env, authorization.as_deref())?;
        if matches!(route, Route::AdminAction { .. }) {
            let body = request.text().await.map_err(|_| RequestError::BadAction)?;
            let action = moderation::admin_action(&body).ok_or(RequestError::BadAction)?;
            route = Route::Moderate { room: room.clone(), action };
        }
    } else {
        let ticket = routes::presented_ticket(url.query.as_deref(), authorization.as_deref())?;
        let identity = match access_policy(env).admit(&room, ticket.as_deref(), now_s()) {
            Ok(identity) => identity,
            Err(refusal) if matches!(route, Route::Join { .. }) => {
                return refuse_join(&route, refusal, protocols.as_deref());
            }
            Err(refusal) => return Err(refusal),
        };
        if let Route::Join { joining, .. } | Route::Events { joining } = &mut route {
            joining.identity = identity;
        }
    }
    let stub = env
        .durable_object("ROOMS")
        .and_then(|rooms| rooms.get_by_name(&room))
        .map_err(internal("finding the room's object"))?;
    // A Socket.IO long-polling POST carries packets; its size is known before it is read.
    if route.socketio().is_some_and(|engine| engine.post) {
        let length = content_length.as_deref().and_then(|length| length.trim().parse::<usize>().ok());
        if length.is_some_and(|length| length > MAX_PAYLOAD) {
            return Err(RequestError::PayloadTooLarge);
        }
        body = Some(request.text().await.map_err(|_| RequestError::BadTransport)?);
    }
    let polling = route.socketio().is_some_and(|engine| engine.transport == Transport::Polling);
    let request = to_room(&route, upgrade.is_some() && !polling, protocols.as_deref(), body, session.as_deref())?;
    let response = stub.fetch_with_request(request).await.map_err(internal("calling the room"))?;
    // Socket.IO polls from allowed pages are read by scripts, as users and history are.
    match cors {
        Some(cors) if polling || !matches!(route, Route::Join { .. }) => allow_origin(response, cors),
        _ => Ok(response),
    }
}

/// The client frame a post stands for (see `sse::post_frame`), or why the room would refuse
/// it anyway. A body is measured by its declared length before it is read.
async fn read_post(request: &mut Request, post: Post) -> Result<Result<String, ErrorCode>, RequestError> {
    let headers = request.headers();
    let declared = headers.get("content-length").ok().flatten().and_then(|length| length.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_FRAME_BYTES) {
        return Ok(Err(ErrorCode::TooLong));
    }
    let content_type = headers.get("content-type").ok().flatten();
    let body = request.text().await.map_err(|_| RequestError::BadQuery)?;
    Ok(sse::post_frame(post, content_type.as_deref(), &body))
}

/// Lets a page from an allowed origin post with the session header.
fn preflight(cors_origin: Option<&str>) -> Result<Response, RequestError> {
    let headers = Headers::new();
    let set = |name: &str, value: &str| headers.set(name, value).map_err(internal("answering a preflight"));
    if let Some(origin) = cors_origin {
        set("access-control-allow-origin", origin)?;
        set("access-control-allow-methods", "POST")?;
        set("access-control-allow-headers", &format!("content-type, {}", sse::SESSION_HEADER))?;
        set("access-control-max-age", "86400")?;
        set("vary", "Origin")?;
    }
    Ok(Response::empty().map_err(internal("answering a preflight"))?.with_status(204).with_headers(headers))
}

/// `PRIVATE_ROOMS` and `TICKET_SECRET`. A secret that cannot be trusted is logged once per
/// isolate, the first time a request needs it; such requests fail closed.
fn access_policy(env: &Env) -> AccessPolicy {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let private_rooms = env.var("PRIVATE_ROOMS").map(|v| v.to_string()).unwrap_or_default();
    let secret = env.secret("TICKET_SECRET").map(|v| v.to_string()).ok();
    let (policy, problem) = AccessPolicy::new(&private_rooms, secret.as_deref());
    if let Some(problem) = problem.filter(|_| !private_rooms.trim().is_empty()) {
        if !LOGGED.swap(true, Ordering::Relaxed) {
            worker::console_error!("edge-chat: private rooms fail closed: {}", problem.reason());
        }
    }
    policy
}

/// Upgrades and HTTP requests per client address across all rooms, counted by the platform's
/// rate limiting binding (`CLIENT_REQUESTS` in wrangler.toml) before any room is touched. A
/// request without an address, or a limiter that fails, is let through: the rooms' own
/// limits still hold.
async fn within_request_budget(env: &Env, address: Option<&str>) -> bool {
    let (Some(address), Ok(limiter)) = (address, env.rate_limiter("CLIENT_REQUESTS")) else { return true };
    match limit(limiter.as_ref().unchecked_ref(), address).await {
        Ok(within) => within,
        Err(error) => {
            let error = worker::Error::from(error);
            worker::console_error!("edge-chat: the request rate limiter failed: {error}");
            true
        }
    }
}

/// Counts a request from `key`: whether it is within the budget (the outcome's `success`).
async fn limit(limiter: &RawLimiter, key: &str) -> Result<bool, JsValue> {
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"key".into(), &key.into())?;
    let outcome = JsFuture::from(limiter.limit(&options)?).await?;
    js_sys::Reflect::get(&outcome, &"success".into())?.as_bool().ok_or_else(|| "an outcome without success".into())
}

/// The admin API exists only where the operator set `ADMIN_TOKEN`; elsewhere it answers 404
/// as if it did not exist. The bearer token is compared in constant time.
fn check_admin_token(env: &Env, authorization: Option<&str>) -> Result<(), RequestError> {
    let token = env.secret("ADMIN_TOKEN").map(|v| v.to_string()).unwrap_or_default();
    if token.is_empty() {
        return Err(RequestError::NotFound);
    }
    let presented = routes::bearer(authorization).unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(RequestError::Unauthorized)
    }
}

/// Refuses a join the way its client reads best: a native upgrade with an error frame and a close
/// code, a Socket.IO handshake (either transport) with a CONNECT_ERROR carrying the code, and a
/// request of a Socket.IO session already open with the plain HTTP error.
fn refuse_join(route: &Route, refusal: RequestError, protocols: Option<&str>) -> Result<Response, RequestError> {
    // Its wire name is a JSON string; not through `serde_json::Value`, which would cost the module its whole tree.
    let name = || serde_json::to_string(&refusal).map(|json| json.trim_matches('"').to_owned()).unwrap_or_default();
    match (route.socketio(), refusal.close_code()) {
        (None, _) => refuse_socket(refusal, offers_batch(protocols)),
        (Some(_), None) => Err(refusal),
        (Some(engine), Some(code)) => match (engine.transport, &engine.sid) {
            (Transport::Websocket, _) => socketio::refused_socket(&name(), refusal.message(), code),
            (Transport::Polling, None) => socketio::refused_poll(&name(), refusal.message()),
            (Transport::Polling, Some(_)) => Err(refusal),
        },
    }
}

/// Refuses an upgrade the way a browser can see: it cannot read the status of a refused
/// handshake, so the Worker accepts the socket itself (no room is touched), sends one
/// `error` frame and closes with the refusal's close code. Refusals without one (the
/// operator's misconfiguration) stay plain HTTP errors, which clients retry.
fn refuse_socket(refusal: RequestError, batch: bool) -> Result<Response, RequestError> {
    let Some(code) = refusal.close_code() else { return Err(refusal) };
    refused_socket(&refusal.to_error_frame(), code, refusal.message(), batch)
}

/// A socket that gets `error_frame` and is closed with `code` at once, never joining a room:
/// a refused upgrade would look to a browser like a network failure worth retrying at once.
/// It is accepted without hibernation, so the runtime completes the close by itself at once
/// (a hibernatable socket closed before its upgrade is answered lingers until eviction). It answers the `edge-chat.batch` subprotocol when the client offered it: a browser fails a
/// handshake that offered a subprotocol and got none back, and would never read the reason.
pub fn refused_socket(error_frame: &str, code: u16, reason: &str, batch: bool) -> Result<Response, RequestError> {
    let pair = WebSocketPair::new().map_err(internal("creating a WebSocket pair"))?;
    pair.server.accept().map_err(internal("accepting a refused socket"))?;
    pair.server.send_with_str(error_frame).map_err(internal("sending a refusal"))?;
    pair.server.close(Some(code), Some(close::reply_reason(reason))).map_err(internal("closing a refused socket"))?;
    let mut response = Response::from_websocket(pair.client).map_err(internal("answering a refused upgrade"))?;
    if batch {
        response.headers_mut().set(PROTOCOL_HEADER, BATCH_PROTOCOL).map_err(internal("answering the subprotocol"))?;
    }
    Ok(response)
}

fn now_s() -> u64 {
    (worker::js_sys::Date::now() / 1000.0) as u64
}

/// Lets a page from an allowed origin (an embedded widget) read a room's users and history.
/// The headers of a fetched response are immutable, so they are copied.
fn allow_origin(response: Response, origin: &str) -> Result<Response, RequestError> {
    let headers: Headers = response.headers().entries().collect();
    headers.set("access-control-allow-origin", origin).map_err(internal("setting CORS headers"))?;
    headers.set("vary", "Origin").map_err(internal("setting CORS headers"))?;
    Ok(response.with_headers(headers))
}

/// The request the room's object receives: the route (see `hop`), and the upgrade header that
/// lets the object answer with a WebSocket, with the subprotocols the client offered; a post's
/// client frame as the body, with its session token.
fn to_room(
    route: &Route,
    upgrade: bool,
    protocols: Option<&str>,
    body: Option<String>,
    session: Option<&str>,
) -> Result<Request, RequestError> {
    let headers = Headers::new();
    headers.set(ROUTE_HEADER, &route.to_hop()).map_err(internal("setting the route header"))?;
    if upgrade {
        headers.set("upgrade", "websocket").map_err(internal("setting the upgrade header"))?;
        if let Some(protocols) = protocols {
            headers.set(PROTOCOL_HEADER, protocols).map_err(internal("setting the subprotocol header"))?;
        }
    }
    if let Some(session) = session {
        headers.set(sse::SESSION_HEADER, session).map_err(internal("setting the session header"))?;
    }
    // A `web_sys` init: `worker`'s `RequestInit` brings in the serialisation of every `cf` option.
    let init = web_sys::RequestInit::new();
    init.set_headers(headers.as_ref());
    match body {
        Some(body) => {
            init.set_method("POST");
            init.set_body(&JsValue::from_str(&body));
        }
        None => init.set_method("GET"),
    }
    let request = web_sys::Request::new_with_str_and_init("https://room.internal/", &init)
        .map_err(|error| internal("building the room request")(worker::Error::from(error)))?;
    Ok(Request::from(request))
}

/// Logs what failed, for the operator, and answers the client with a plain 500: nothing
/// internal ever reaches a client.
pub fn internal<E: std::fmt::Display>(doing: &'static str) -> impl Fn(E) -> RequestError {
    move |error| {
        worker::console_error!("edge-chat: failed {doing}: {error}");
        RequestError::Internal
    }
}

pub fn error_response(error: RequestError) -> worker::Result<Response> {
    json_response(error.status(), error.to_json())
}

pub fn json_response(status: u16, body: String) -> worker::Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::ok(body)?.with_status(status).with_headers(headers))
}
