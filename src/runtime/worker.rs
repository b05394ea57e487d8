//! The Worker: validates each request (see `routes`) and hands chat requests to the Durable
//! Object of their room, one object per room name. Refusals are answered here, as JSON with
//! the right status, so a bad request never wakes a room. Static pages are served by the
//! assets binding before this code runs.

use crate::edge::origin::AllowedOrigins;
use crate::edge::routes::{self, Handshake, RequestError, RequestParts, Route};
use worker::{event, Context, Env, Headers, Method, Request, RequestInit, Response};

/// The header that carries the validated route from the Worker to the room's object.
pub const ROUTE_HEADER: &str = "x-edge-chat-route";

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

#[event(fetch)]
async fn fetch(request: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    match handle(request, &env).await {
        Ok(response) => Ok(response),
        Err(error) => error_response(error),
    }
}

async fn handle(request: Request, env: &Env) -> Result<Response, RequestError> {
    let url = request.url().map_err(internal("reading the request URL"))?;
    let headers = request.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    let (upgrade, origin) = (header("upgrade"), header("origin"));
    // Under wrangler dev these are the dev proxy's own (it re-does the handshake, and answers
    // a broken one itself); deployed, they are the client's.
    let (connection, key, version) = (header("connection"), header("sec-websocket-key"), header("sec-websocket-version"));
    // Set by Cloudflare's edge (and by wrangler dev locally) to the client's address.
    let client_address = header("cf-connecting-ip");
    let own_origin = url.origin().ascii_serialization();
    let method = request.method();
    let parts = RequestParts {
        method: method.as_ref(),
        path: url.path(),
        query: url.query(),
        upgrade: upgrade.as_deref(),
        handshake: Handshake { connection: connection.as_deref(), key: key.as_deref(), version: version.as_deref() },
        origin: origin.as_deref(),
        client_address: client_address.as_deref(),
        own_origin: &own_origin,
    };
    let allowed = AllowedOrigins::parse(&env.var("ALLOWED_ORIGINS").map(|v| v.to_string()).unwrap_or_default());
    let route = routes::route(&parts, &allowed)?;
    let Some(room) = route.room() else {
        return json_response(200, r#"{"ok":true}"#.to_owned()).map_err(internal("answering health"));
    };
    let stub = env
        .durable_object("ROOMS")
        .and_then(|rooms| rooms.get_by_name(room))
        .map_err(internal("finding the room's object"))?;
    let response =
        stub.fetch_with_request(to_room(&route, upgrade.is_some())?).await.map_err(internal("calling the room"))?;
    match allowed.cors_origin(origin.as_deref(), &own_origin) {
        Some(cors) if !matches!(route, Route::Join { .. }) => allow_origin(response, cors),
        _ => Ok(response),
    }
}

/// Lets a page from an allowed origin (an embedded widget) read a room's users and history.
/// The headers of a fetched response are immutable, so they are copied.
fn allow_origin(response: Response, origin: &str) -> Result<Response, RequestError> {
    let headers: Headers = response.headers().entries().collect();
    headers.set("access-control-allow-origin", origin).map_err(internal("setting CORS headers"))?;
    headers.set("vary", "Origin").map_err(internal("setting CORS headers"))?;
    Ok(response.with_headers(headers))
}

/// The request the room's object receives: the route as JSON, and the upgrade header that
/// lets the object answer with a WebSocket.
fn to_room(route: &Route, upgrade: bool) -> Result<Request, RequestError> {
    let headers = Headers::new();
    let route_json = serde_json::to_string(route).map_err(internal("encoding the route"))?;
    headers.set(ROUTE_HEADER, &route_json).map_err(internal("setting the route header"))?;
    if upgrade {
        headers.set("upgrade", "websocket").map_err(internal("setting the upgrade header"))?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    Request::new_with_init("https://room.internal/", &init).map_err(internal("building the room request"))
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
