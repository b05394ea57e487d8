//! Server-Sent Events: the room's frames as an event stream for clients that only get plain
//! HTTP through, and the posts they send back. Framing and the rules of a post are decided
//! here; the Durable Object only writes the bytes (see `runtime::chat_room`).
//!
//! Each frame is one event: `event:` its type, `data:` its JSON, and `id:` the room's resume
//! position on the frames that have one, which `Last-Event-ID` brings back on a reconnect.

use crate::chat::protocol::{json_text, ErrorCode, MAX_FRAME_BYTES};
use serde_json::{Map, Value};

/// The header a post carries the stream's session token in.
pub const SESSION_HEADER: &str = "x-edge-chat-session";

/// The comment line that keeps idle proxies from closing a quiet stream.
pub const KEEPALIVE: &str = ":\n\n";

/// How often a stream gets `KEEPALIVE`, unless `SSE_KEEPALIVE_MS` says otherwise.
pub const DEFAULT_KEEPALIVE_MS: u32 = 20_000;

/// Open streams per room, unless `MAX_ROOM_STREAMS` says otherwise.
pub const DEFAULT_MAX_ROOM_STREAMS: u32 = 100;

/// The resume position a frame carries, if any: what `id:` says and `Last-Event-ID` returns.
/// It is the `seq` of the frames that change history (`message`, `edited`, `deleted`,
/// `reactions`), which is what `after` takes; other frames have none.
pub fn resume_position(frame_json: &str) -> Option<u64> {
    if !matches!(frame_type(frame_json), Some("message" | "edited" | "deleted" | "reactions")) {
        return None;
    }
    // Read as a `Value`, whose decoder the module has anyway: a derived one costs it ~4 KB.
    serde_json::from_str::<Value>(frame_json).ok()?.get("seq")?.as_u64()
}

/// The `type` of a server frame: serde writes the tag first, so it is read off the front.
fn frame_type(frame_json: &str) -> Option<&str> {
    let rest = frame_json.strip_prefix(r#"{"type":""#)?;
    rest.split_once('"').map(|(kind, _)| kind)
}

/// A broadcast frame as one event, built once per frame and written to every stream.
pub fn event(frame_json: &str) -> String {
    event_at(frame_json, resume_position(frame_json))
}

/// A frame as one event with the resume position `position`. JSON from serde has no raw line
/// breaks, but each line would get its own `data:` if it had.
pub fn event_at(frame_json: &str, position: Option<u64>) -> String {
    let kind = frame_type(frame_json).unwrap_or("message");
    let mut event = String::with_capacity(frame_json.len() + kind.len() + 32);
    event.push_str("event: ");
    event.push_str(kind);
    event.push('\n');
    if let Some(position) = position {
        event.push_str(&format!("id: {position}\n"));
    }
    for line in frame_json.split('\n') {
        event.push_str("data: ");
        event.push_str(line.trim_end_matches('\r'));
        event.push('\n');
    }
    event.push('\n');
    event
}

/// The first event of every stream: the token its posts must carry, and the stream's nick.
pub fn session_event(token: &str, nick: &str) -> String {
    let data = json_text(&serde_json::json!({ "token": token, "nick": nick }));
    format!("event: session\ndata: {data}\n\n")
}

/// The last event of a stream the room ends (a kick, a ban, flooding): the code and reason a
/// socket would have been closed with, so that a client knows not to reconnect.
pub fn close_event(code: u16, reason: &str) -> String {
    let data = json_text(&serde_json::json!({ "code": code, "reason": reason }));
    format!("event: close\ndata: {data}\n\n")
}

/// Where a stream starts, as `(since, after)`: `Last-Event-ID` (sent by an `EventSource` that
/// reconnects) is the seq of the last change it saw, so it resumes as `after` and wins over the
/// query, being the later position. `Err` when the header is not a seq.
pub fn resume_from(last_event_id: Option<&str>, since: Option<u64>, after: Option<u64>) -> Result<(Option<u64>, Option<u64>), ()> {
    match last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => id.parse().map(|seq| (None, Some(seq))).map_err(|_| ()),
        None => Ok((since, after)),
    }
}

/// What a post asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    Message,
    Nick,
}

/// The client frames other than a post that `POST /messages` passes through as they are: what
/// a socket does to messages besides posting them.
const MESSAGE_FRAMES: [&str; 4] = ["edit", "delete", "react", "typing"];

/// The client frame a post stands for, for the room to handle as if its stream's user had sent
/// it over a socket. A JSON object's other fields (such as `cid`, `reply_to`) pass through as
/// they would in a frame; `type` is the route's, whatever the body says, except that a
/// `/messages` body may be one of `MESSAGE_FRAMES`, which the room checks like a socket's. A
/// body that is not JSON is the text (or the nick) itself.
pub fn post_frame(post: Post, content_type: Option<&str>, body: &str) -> Result<String, ErrorCode> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(ErrorCode::TooLong);
    }
    let (kind, field) = match post {
        Post::Message => ("message", "text"),
        Post::Nick => ("nick", "nick"),
    };
    let is_json = content_type.is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    let mut frame = if is_json {
        let value = serde_json::from_str::<Value>(body).map_err(|_| ErrorCode::BadJson)?;
        let passes = post == Post::Message && value.get("type").and_then(Value::as_str).is_some_and(|t| MESSAGE_FRAMES.contains(&t));
        if passes {
            return Ok(json_text(&value));
        }
        match value {
            Value::Object(fields) if fields.get(field).is_some_and(Value::is_string) => fields,
            _ => return Err(ErrorCode::BadJson),
        }
    } else {
        let mut fields = Map::new();
        fields.insert(field.to_owned(), Value::String(body.to_owned()));
        fields
    };
    frame.insert("type".to_owned(), Value::String(kind.to_owned()));
    Ok(json_text(&Value::Object(frame)))
}

/// The HTTP status a post refused by the room is answered with.
pub fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::TooLong => 413,
        ErrorCode::Forbidden | ErrorCode::Banned | ErrorCode::TooLate => 403,
        ErrorCode::TicketExpired => 401,
        ErrorCode::NickTaken => 409,
        ErrorCode::RateLimited | ErrorCode::SlowMode | ErrorCode::TooManyConnections => 429,
        ErrorCode::Unavailable => 503,
        ErrorCode::NotFound => 404,
        ErrorCode::Empty
        | ErrorCode::BadJson
        | ErrorCode::BadType
        | ErrorCode::Unsupported
        | ErrorCode::BadNick
        | ErrorCode::BadText
        | ErrorCode::BadEmoji => 400,
    }
}

/// The body of a refused post: the same shape as every other HTTP refusal.
pub fn error_body(code: ErrorCode) -> String {
    json_text(&serde_json::json!({ "error": { "code": code, "message": code.message() } }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::protocol::{ChatMessage, ServerFrame};

    fn message(id: u64, seq: u64) -> String {
        let message = ChatMessage { id, nick: "Ann".into(), text: "hi\nthere".into(), at: 5, seq, ..Default::default() };
        serde_json::to_string(&message).unwrap()
    }

    #[test]
    fn a_message_is_one_event_with_its_seq() {
        let json = message(42, 50);
        assert_eq!(event(&json), format!("event: message\nid: 50\ndata: {json}\n\n"));
        assert!(!json.contains('\n'), "serde escapes line breaks, so data is one line");
    }

    #[test]
    fn frames_without_a_position_have_no_id() {
        let joined = ServerFrame::Joined { nick: "Bob".into(), at: 1 }.to_json();
        assert_eq!(event(&joined), format!("event: joined\ndata: {joined}\n\n"));
        assert_eq!(resume_position(&ServerFrame::Typing { nick: "Bob".into(), until: 9 }.to_json()), None);
        assert_eq!(resume_position(&message(7, 9)), Some(9));
    }

    #[test]
    fn every_change_to_history_is_a_position() {
        // Their `id` names the message changed; the position is the change's `seq`.
        let deleted = ServerFrame::Deleted { id: 3, at: 1, seq: 11 }.to_json();
        let edited = ServerFrame::Edited { id: 3, text: "x".into(), edited_at: 2, seq: 12 }.to_json();
        let reactions = ServerFrame::Reactions { id: 3, counts: Default::default(), seq: 13 }.to_json();
        assert_eq!([&deleted, &edited, &reactions].map(|json| resume_position(json)), [Some(11), Some(12), Some(13)]);
        assert!(event(&edited).starts_with("event: edited\nid: 12\n"));
    }

    #[test]
    fn raw_line_breaks_become_data_lines() {
        assert_eq!(event_at("{\"type\":\"x\"\r\n}", Some(1)), "event: x\nid: 1\ndata: {\"type\":\"x\"\ndata: }\n\n");
    }

    #[test]
    fn the_session_event_carries_token_and_nick() {
        assert_eq!(session_event("abc", "Ann"), "event: session\ndata: {\"nick\":\"Ann\",\"token\":\"abc\"}\n\n");
    }

    #[test]
    fn the_close_event_carries_code_and_reason() {
        assert_eq!(close_event(4000, "kicked"), "event: close\ndata: {\"code\":4000,\"reason\":\"kicked\"}\n\n");
    }

    #[test]
    fn last_event_id_resumes_as_after_over_the_query() {
        assert_eq!(resume_from(Some("12"), Some(3), None), Ok((None, Some(12))));
        assert_eq!(resume_from(Some("12"), None, Some(3)), Ok((None, Some(12))));
        assert_eq!(resume_from(None, Some(3), None), Ok((Some(3), None)));
        assert_eq!(resume_from(Some(" "), None, Some(5)), Ok((None, Some(5))));
        assert_eq!(resume_from(Some("x"), None, None), Err(()));
        assert_eq!(resume_from(Some("-1"), None, None), Err(()));
    }

    #[test]
    fn posts_become_client_frames() {
        let frame = |post, content_type, body| {
            post_frame(post, content_type, body).map(|json| serde_json::from_str::<Value>(&json).unwrap())
        };
        let json = Some("application/json; charset=utf-8");
        assert_eq!(frame(Post::Message, json, r#"{"text":"hi","cid":"c1"}"#).unwrap(), serde_json::json!({"type":"message","text":"hi","cid":"c1"}));
        assert_eq!(frame(Post::Message, json, r#"{"type":"kick","text":"hi"}"#).unwrap()["type"], "message");
        assert_eq!(frame(Post::Message, json, r#"{"text":"re","reply_to":4}"#).unwrap()["reply_to"], 4);
        for passed in [r#"{"type":"edit","id":1,"text":"x"}"#, r#"{"type":"delete","id":1}"#, r#"{"type":"react","id":1,"emoji":"👍"}"#, r#"{"type":"typing"}"#] {
            assert_eq!(frame(Post::Message, json, passed).unwrap(), serde_json::from_str::<Value>(passed).unwrap());
        }
        // A rename takes no other frame.
        assert_eq!(frame(Post::Nick, json, r#"{"type":"typing","nick":"Bo"}"#).unwrap()["type"], "nick");
        assert_eq!(frame(Post::Message, Some("text/plain"), "{not json").unwrap(), serde_json::json!({"type":"message","text":"{not json"}));
        assert_eq!(frame(Post::Message, None, "hi").unwrap()["text"], "hi");
        assert_eq!(frame(Post::Nick, json, r#"{"nick":"Bo"}"#).unwrap(), serde_json::json!({"type":"nick","nick":"Bo"}));
        for bad in ["", "[]", "{\"text\":1}", "{\"nick\":\"x\"}", "nope"] {
            assert_eq!(post_frame(Post::Message, json, bad), Err(ErrorCode::BadJson), "{bad}");
        }
        assert_eq!(post_frame(Post::Message, None, &"x".repeat(MAX_FRAME_BYTES + 1)), Err(ErrorCode::TooLong));
    }

    #[test]
    fn every_refusal_has_a_client_error_status_or_unavailable() {
        for code in ErrorCode::ALL {
            let status = status_of(code);
            assert!((400..500).contains(&status) || status == 503, "{code:?}: {status}");
        }
        let body: Value = serde_json::from_str(&error_body(ErrorCode::Empty)).unwrap();
        assert_eq!(body["error"]["code"], "empty");
    }
}
