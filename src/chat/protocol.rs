//! The WebSocket protocol: what clients may send, what the server sends back, and the
//! error codes. Every frame is a JSON text frame with a `"type"`; the names and fields here
//! are a contract that other clients are written against, so they change only on purpose.

use crate::chat::identity::Role;
use crate::chat::moderation::Action;
use serde::Serialize;
use serde_json::Value;
use crate::chat::marks::is_combining_mark;

/// Longest message text, in Unicode scalar values, after trimming.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// The longest JSON encoding of one character: a surrogate pair escaped as `\uXXXX\uXXXX`,
/// which is how Python's `json.dumps` sends an emoji by default.
pub const MAX_ESCAPED_CHAR_BYTES: usize = 12;

/// Room for everything in a frame but its text: the type, other fields, whitespace.
pub const FRAME_ENVELOPE_BYTES: usize = 1024;

/// Frames larger than this are refused before they are parsed. Sized from the worst legal
/// encoding, so that every message of `MAX_TEXT_CHARS` fits however its client escapes it.
pub const MAX_FRAME_BYTES: usize = MAX_TEXT_CHARS * MAX_ESCAPED_CHAR_BYTES + FRAME_ENVELOPE_BYTES;

/// Characters that show nothing: a text made only of them (and whitespace) is `empty`.
const INVISIBLE: [char; 5] = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];

/// Most combining marks in a row: more stack into a column that spills over other lines.
pub const MAX_COMBINING_MARKS: usize = 4;

/// Longest client-chosen token: a message's `cid`, or the `client` id of an upgrade.
pub const MAX_TOKEN_CHARS: usize = 64;

/// Whether `token` is a valid `cid` or `client` id: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn is_client_token(token: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    (1..=MAX_TOKEN_CHARS).contains(&token.len()) && token.bytes().all(allowed)
}

/// A message's reactions: each emoji to how many senders chose it, in the emojis' byte order
/// (as a JSON object of them is written). A sorted list, not a `BTreeMap`: a message has at most
/// 20 emojis, and a second kind of `BTreeMap` beside serde_json's objects cost the WASM module 3 KB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(Vec<(String, u32)>);

impl Counts {
    pub fn new() -> Self {
        Counts(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many emojis the message has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, emoji: &str) -> Option<u32> {
        self.find(emoji).ok().map(|at| self.0[at].1)
    }

    /// Each emoji and its count, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.0.iter().map(|(emoji, count)| (emoji.as_str(), *count))
    }

    /// One sender more chose `emoji`.
    pub fn add(&mut self, emoji: &str) {
        match self.find(emoji) {
            Ok(at) => self.0[at].1 += 1,
            Err(at) => self.0.insert(at, (emoji.to_owned(), 1)),
        }
    }

    fn set(&mut self, emoji: String, count: u32) {
        match self.find(&emoji) {
            Ok(at) => self.0[at].1 = count,
            Err(at) => self.0.insert(at, (emoji, count)),
        }
    }

    /// One sender fewer chose `emoji`; at none, it goes.
    pub fn take(&mut self, emoji: &str) {
        if let Ok(at) = self.find(emoji) {
            match self.0[at].1 {
                0 | 1 => drop(self.0.remove(at)),
                _ => self.0[at].1 -= 1,
            }
        }
    }

    fn find(&self, emoji: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(known, _)| known.as_str().cmp(emoji))
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

#[cfg(test)]
impl FromIterator<(String, u32)> for Counts {
    fn from_iter<I: IntoIterator<Item = (String, u32)>>(pairs: I) -> Self {
        let mut counts = Counts::new();
        pairs.into_iter().for_each(|(emoji, count)| counts.set(emoji, count));
        counts
    }
}

/// Reads reactions as they are stored (`{"👍":2}`); `None` unless every count is a `u32`. Read
/// through `Value`, as every other JSON is: a typed read would bring serde's type-error
/// messages, and the float formatting they use, into the WASM module.
pub fn counts_from_json(json: &str) -> Option<Counts> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(json) else { return None };
    let mut counts = Counts::new();
    for (emoji, count) in object {
        counts.set(emoji, count.as_u64().and_then(|count| u32::try_from(count).ok())?);
    }
    Some(counts)
}

/// What a client asked for, once its frame has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `cid` names the message for its sender, so that a resend posts nothing; `reply_to` is
    /// the id of the message it answers.
    Message { text: String, cid: Option<String>, reply_to: Option<u64> },
    Nick { nick: String },
    /// The author replaces a message's text.
    Edit { id: u64, text: String },
    /// Toggles the sender's reaction `emoji` on a message.
    React { id: u64, emoji: String },
    /// The sender is typing: not stored, told to everyone else.
    Typing,
    /// A moderator's action; the room checks the sender's role.
    Moderate(Action),
}

/// The raw frame as the runtime delivered it.
#[derive(Debug, Clone, Copy)]
pub enum Incoming<'a> {
    Text(&'a str),
    /// A text frame the runtime measured as longer than `MAX_FRAME_BYTES` before copying it.
    Oversized,
    Binary,
    /// One item of an array frame (see `split_array`).
    Item(&'a Value),
    /// An array frame that `split_array` refused, with the reason.
    BadArray(ErrorCode),
}

/// The most frames in one array a socket sends, as many as the room puts in one it sends.
pub const MAX_ARRAY_ITEMS: usize = crate::chat::outbox::MAX_BATCH_FRAMES;

/// A socket that opted in to batches may send a text frame that is a JSON array of frames, each
/// handled in order as if it had come alone (`Incoming::Item`); this reads it. One that is not a
/// JSON array of 1 to `MAX_ARRAY_ITEMS` items is refused whole, and none of its items counts.
pub fn split_array(text: &str) -> Result<Vec<Value>, ErrorCode> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(ErrorCode::TooLong);
    }
    // Read as a `Value`, as every frame is: a typed read would bring serde's error messages into the WASM.
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) if (1..=MAX_ARRAY_ITEMS).contains(&items.len()) => Ok(items),
        _ => Err(ErrorCode::BadJson),
    }
}

/// Reads one client frame. A text frame that does not start with `{` is a message whose
/// text is the whole frame, so that a line typed into `websocat` is a chat message.
/// Fields other than the documented ones are ignored.
pub fn parse_client_frame(frame: Incoming<'_>) -> Result<ClientFrame, ErrorCode> {
    let text = match frame {
        Incoming::Binary => return Err(ErrorCode::Unsupported),
        Incoming::Oversized => return Err(ErrorCode::TooLong),
        Incoming::BadArray(code) => return Err(code),
        Incoming::Item(value) if value.is_object() => return read_object(value),
        Incoming::Item(_) => return Err(ErrorCode::BadJson),
        Incoming::Text(text) => text,
    };
    if text.len() > MAX_FRAME_BYTES {
        return Err(ErrorCode::TooLong);
    }
    if !text.starts_with('{') {
        return Ok(ClientFrame::Message { text: text.to_owned(), cid: None, reply_to: None });
    }
    read_object(&serde_json::from_str(text).map_err(|_| ErrorCode::BadJson)?)
}

/// Reads a frame that is a JSON object.
fn read_object(value: &Value) -> Result<ClientFrame, ErrorCode> {
    let string_field = |name: &str| match value.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ErrorCode::BadJson),
    };
    let id_field = |name: &str| value.get(name).and_then(Value::as_u64).ok_or(ErrorCode::BadJson);
    if let Some(action) = Action::from_json(value, "type") {
        return action.map(ClientFrame::Moderate);
    }
    match value.get("type").and_then(Value::as_str) {
        Some("message") => {
            let cid = match value.get("cid") {
                None | Some(Value::Null) => None,
                Some(Value::String(cid)) if is_client_token(cid) => Some(cid.clone()),
                Some(_) => return Err(ErrorCode::BadJson),
            };
            let reply_to = match value.get("reply_to") {
                None | Some(Value::Null) => None,
                Some(_) => Some(id_field("reply_to")?),
            };
            Ok(ClientFrame::Message { text: string_field("text")?, cid, reply_to })
        }
        Some("nick") => Ok(ClientFrame::Nick { nick: string_field("nick")? }),
        Some("edit") => Ok(ClientFrame::Edit { id: id_field("id")?, text: string_field("text")? }),
        Some("react") => Ok(ClientFrame::React { id: id_field("id")?, emoji: string_field("emoji")? }),
        Some("typing") => Ok(ClientFrame::Typing),
        _ => Err(ErrorCode::BadType),
    }
}

/// Trims a message text, turns CRLF into LF, and checks its length and characters: no
/// control characters but tab and line breaks (each escaped, they cost six bytes on the wire),
/// and at most `MAX_COMBINING_MARKS` combining marks in a row. One pass over the text.
pub fn clean_text(text: &str) -> Result<String, ErrorCode> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ErrorCode::Empty);
    }
    let (mut chars, mut marks, mut bad, mut visible) = (0usize, 0usize, false, false);
    for c in trimmed.chars() {
        chars += 1;
        if c.is_ascii() {
            marks = 0;
            bad |= c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
            visible |= !c.is_ascii_whitespace();
        } else if is_combining_mark(c) {
            marks += 1;
            bad |= marks > MAX_COMBINING_MARKS;
            visible = true;
        } else {
            marks = 0;
            bad |= c.is_control();
            visible |= !c.is_whitespace() && !INVISIBLE.contains(&c);
        }
    }
    if !visible {
        return Err(ErrorCode::Empty);
    }
    if chars > MAX_TEXT_CHARS {
        return Err(ErrorCode::TooLong);
    }
    if bad {
        return Err(ErrorCode::BadText);
    }
    Ok(if trimmed.contains("\r\n") { trimmed.replace("\r\n", "\n") } else { trimmed.to_owned() })
}

/// A stored chat message, exactly as it is broadcast and as history returns it (its current
/// state: edited text, tombstone, reactions). It carries its own `"type":"message"`, so it is
/// serialised on its own rather than as a `ServerFrame`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "message")]
pub struct ChatMessage {
    pub id: u64,
    pub nick: String,
    /// Erased (and left out) once the message is deleted.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    pub at: u64,
    /// The room's sequence number of this message's latest change (post, edit, delete, reaction).
    pub seq: u64,
    /// A tombstone: the message was deleted, its id stays.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The sender's ticket identity (`sub`); absent for anonymous senders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The id of the message this one answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// When its author last edited it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<u64>,
    #[serde(skip_serializing_if = "Counts::is_empty")]
    pub reactions: Counts,
    /// The sender's own id for the message: only in the echo to its sender, never stored in a
    /// frame anyone else receives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

/// Who a socket is, as its welcome tells it: `id` is the ticket's `sub`, null when anonymous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct You {
    pub nick: String,
    pub id: Option<String>,
    pub role: Role,
}

impl ChatMessage {
    /// The length of this message's JSON exactly as serde_json writes it, without writing it.
    pub fn json_len(&self) -> usize {
        const FIXED: usize = r#"{"type":"message","id":,"nick":"","at":,"seq":}"#.len();
        const TEXT: usize = r#","text":"""#.len();
        const DELETED: usize = r#","deleted":true"#.len();
        const UID: usize = r#","uid":"""#.len();
        const REPLY_TO: usize = r#","reply_to":"#.len();
        const EDITED_AT: usize = r#","edited_at":"#.len();
        const REACTIONS: usize = r#","reactions":{}"#.len();
        const CID: usize = r#","cid":"""#.len();
        let text = if self.text.is_empty() { 0 } else { TEXT + escaped_len(&self.text) };
        let deleted = if self.deleted { DELETED } else { 0 };
        let uid = self.uid.as_deref().map_or(0, |uid| UID + escaped_len(uid));
        let reply_to = self.reply_to.map_or(0, |id| REPLY_TO + digits(id));
        let edited_at = self.edited_at.map_or(0, |at| EDITED_AT + digits(at));
        // `"EMOJI":COUNT`, comma-separated.
        let pair = |(emoji, count): (&str, u32)| escaped_len(emoji) + 3 + digits(u64::from(count));
        let reactions = match self.reactions.len() {
            0 => 0,
            n => REACTIONS + n - 1 + self.reactions.iter().map(pair).sum::<usize>(),
        };
        let cid = self.cid.as_deref().map_or(0, |cid| CID + escaped_len(cid));
        FIXED + digits(self.id) + digits(self.at) + digits(self.seq) + escaped_len(&self.nick) + text + deleted + uid
            + reply_to + edited_at + reactions + cid
    }
}

/// A message as everyone gets it, and with a `cid`, the sender's own copy that carries it. The
/// copy is the shared JSON with `"cid"` appended, which is where serde puts it (the last field),
/// so a message is serialised once however many copies it has.
pub fn encode_post(message: &ChatMessage, cid: Option<&str>) -> serde_json::Result<(String, Option<String>)> {
    debug_assert!(message.cid.is_none(), "the shared copy never carries a cid");
    let json = serde_json::to_string(message)?;
    let Some(cid) = cid else { return Ok((json, None)) };
    let cid = serde_json::to_string(cid)?;
    let mut own = String::with_capacity(json.len() + cid.len() + 7);
    own.push_str(&json[..json.len() - 1]);
    own.push_str(",\"cid\":");
    own.push_str(&cid);
    own.push('}');
    Ok((json, Some(own)))
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// The bytes of `s` inside a JSON string: serde_json escapes quotes, backslashes and C0
/// controls (the common ones in two bytes, the rest as `\u00XX`), nothing else.
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Every frame the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Welcome {
        room: String,
        nick: String,
        users: Vec<String>,
        history: Vec<ChatMessage>,
        you: You,
        /// The room's latest sequence number: resume from it with `?after=`.
        seq: u64,
        /// A resumed client may hold messages a moderator's `clear` removed while it was away:
        /// it drops them before taking `history`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cleared: bool,
    },
    Joined {
        nick: String,
        at: u64,
    },
    Left {
        nick: String,
        at: u64,
    },
    Renamed {
        from: String,
        to: String,
        at: u64,
    },
    Deleted {
        id: u64,
        at: u64,
        seq: u64,
    },
    Edited {
        id: u64,
        text: String,
        edited_at: u64,
        seq: u64,
    },
    /// A message's reactions after a toggle.
    Reactions {
        id: u64,
        counts: Counts,
        seq: u64,
    },
    /// `nick` is typing, until the time `until` unless another `typing` extends it.
    Typing {
        nick: String,
        until: u64,
    },
    /// What a moderator (or the operator, `by: "admin"`) did, for the whole room to see.
    Moderated {
        action: &'static str,
        target: Option<String>,
        by: String,
        at: u64,
    },
    Error {
        code: ErrorCode,
        message: &'static str,
    },
}

impl ServerFrame {
    pub fn error(code: ErrorCode) -> Self {
        ServerFrame::Error { code, message: code.message() }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// `value` as JSON text, written as every frame is: `Value`'s `Display` would be a second JSON
/// writer in the WASM module (with a pretty printer, 1.2 KB gzipped).
pub fn json_text(value: &Value) -> String {
    serde_json::to_string(value).expect("JSON values always serialise")
}

/// Why a client frame was refused. Sent in an `error` frame to the offending socket only,
/// which stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    TooLong,
    Empty,
    BadJson,
    BadType,
    Unsupported,
    BadNick,
    NickTaken,
    RateLimited,
    /// The room could not store the message; nothing was broadcast.
    Unavailable,
    /// The sender's role does not allow this (readonly users post nothing; a ticketed nick
    /// comes from the ticket).
    Forbidden,
    /// The socket's ticket expired: it is closed with 4401 after this frame.
    TicketExpired,
    /// No such message or person.
    NotFound,
    /// Slow mode: one message per person per interval.
    SlowMode,
    /// Banned from this room: the socket is closed with 4403 after this frame.
    Banned,
    /// Text with control characters or a pile of combining marks.
    BadText,
    /// The client already has `MAX_SOCKETS_PER_IP` sockets in this room: sent on the upgrade,
    /// then the socket is closed with 4429.
    TooManyConnections,
    /// An edit after `EDIT_WINDOW_S`.
    TooLate,
    /// A reaction that is not one emoji, or one more distinct emoji than a message may have.
    BadEmoji,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::TooLong,
        ErrorCode::Empty,
        ErrorCode::BadJson,
        ErrorCode::BadType,
        ErrorCode::Unsupported,
        ErrorCode::BadNick,
        ErrorCode::NickTaken,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Forbidden,
        ErrorCode::TicketExpired,
        ErrorCode::NotFound,
        ErrorCode::SlowMode,
        ErrorCode::Banned,
        ErrorCode::BadText,
        ErrorCode::TooManyConnections,
        ErrorCode::TooLate,
        ErrorCode::BadEmoji,
    ];

    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::TooLong => "Messages can be at most 2000 characters long.",
            ErrorCode::Empty => "Messages cannot be empty.",
            ErrorCode::BadJson => {
                "That frame is not valid: see the protocol for the fields of message, nick, edit, delete, react and typing."
            }
            ErrorCode::BadType => "Unknown frame type: use message, nick, edit, delete, react or typing.",
            ErrorCode::Unsupported => "Binary frames are not supported: send text.",
            ErrorCode::BadNick => "Nicknames are 1 to 32 letters, digits, '_', '-' or '.'.",
            ErrorCode::NickTaken => "That nickname is already taken in this room.",
            ErrorCode::RateLimited => "You are sending too fast: that message was dropped.",
            ErrorCode::Unavailable => "The room could not store that message: please send it again.",
            ErrorCode::Forbidden => "Your role in this room does not allow that, or the message is not yours.",
            ErrorCode::TicketExpired => "Your ticket has expired: reconnect with a fresh one.",
            ErrorCode::NotFound => "There is no such message (or it was deleted) or person in this room.",
            ErrorCode::SlowMode => "Slow mode is on: wait a little before your next message.",
            ErrorCode::Banned => "You are banned from this room.",
            ErrorCode::BadText => {
                "Messages cannot contain control characters (other than tab and line breaks) or more than 4 combining marks in a row."
            }
            ErrorCode::TooManyConnections => "Too many connections from your address to this room.",
            ErrorCode::TooLate => "That message is too old to edit.",
            ErrorCode::BadEmoji => "A reaction is one emoji, and a message has at most 20 different ones.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_written_in_byte_order_and_an_emoji_goes_at_none() {
        let mut counts = Counts::new();
        ["👍", "🎉", "a", "👍"].iter().for_each(|emoji| counts.add(emoji));
        assert_eq!(serde_json::to_string(&counts).unwrap(), r#"{"a":1,"🎉":1,"👍":2}"#);
        ["🎉", "👍", "b"].iter().for_each(|emoji| counts.take(emoji));
        assert_eq!(serde_json::to_string(&counts).unwrap(), r#"{"a":1,"👍":1}"#);
        assert_eq!((counts.get("👍"), counts.get("🎉"), counts.len()), (Some(1), None, 2));
    }

    #[test]
    fn stored_counts_are_read_back_or_not_at_all() {
        let counts: Counts = [("👍".to_owned(), 2), ("🎉".to_owned(), 1)].into_iter().collect();
        assert_eq!(counts_from_json(&serde_json::to_string(&counts).unwrap()), Some(counts));
        assert_eq!(counts_from_json("{}"), Some(Counts::new()));
        for bad in [r#"{"👍":-1}"#, r#"{"👍":1.5}"#, r#"{"👍":4294967296}"#, r#"{"👍":"2"}"#, "[]", "{"] {
            assert_eq!(counts_from_json(bad), None, "{bad}");
        }
    }
    use serde_json::json;

    fn parse(text: &str) -> Result<ClientFrame, ErrorCode> {
        parse_client_frame(Incoming::Text(text))
    }

    #[test]
    fn plain_text_is_a_message() {
        assert_eq!(parse("hello there"), Ok(ClientFrame::Message { text: "hello there".into(), cid: None, reply_to: None }));
        assert_eq!(parse(" {not json"), Ok(ClientFrame::Message { text: " {not json".into(), cid: None, reply_to: None }));
    }

    #[test]
    fn json_frames_are_read_and_extra_fields_ignored() {
        assert_eq!(
            parse(r#"{"type":"message","text":"hi","nick":"someone-else","id":7}"#),
            Ok(ClientFrame::Message { text: "hi".into(), cid: None, reply_to: None })
        );
        assert_eq!(parse(r#"{"type":"nick","nick":"Ann"}"#), Ok(ClientFrame::Nick { nick: "Ann".into() }));
    }

    #[test]
    fn message_edit_react_and_typing_frames_are_read() {
        assert_eq!(
            parse(r#"{"type":"message","text":"hi","cid":"a-1_Z","reply_to":4}"#),
            Ok(ClientFrame::Message { text: "hi".into(), cid: Some("a-1_Z".into()), reply_to: Some(4) })
        );
        assert_eq!(
            parse(r#"{"type":"message","text":"hi","cid":null,"reply_to":null}"#),
            Ok(ClientFrame::Message { text: "hi".into(), cid: None, reply_to: None })
        );
        for bad in ["", "has space", "ü", "x".repeat(65).as_str(), "a/b"] {
            let frame = json!({"type": "message", "text": "hi", "cid": bad}).to_string();
            assert_eq!(parse(&frame), Err(ErrorCode::BadJson), "{bad:?}");
        }
        assert!(is_client_token(&"x".repeat(64)));
        assert_eq!(parse(r#"{"type":"message","text":"hi","reply_to":-1}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"message","text":"hi","cid":5}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"edit","id":3,"text":"new"}"#), Ok(ClientFrame::Edit { id: 3, text: "new".into() }));
        assert_eq!(parse(r#"{"type":"edit","id":"3","text":"new"}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"edit","id":3}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"react","id":3,"emoji":"👍"}"#), Ok(ClientFrame::React { id: 3, emoji: "👍".into() }));
        assert_eq!(parse(r#"{"type":"react","emoji":"👍"}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"typing"}"#), Ok(ClientFrame::Typing));
        assert_eq!(parse(r#"{"type":"delete","id":3}"#), Ok(ClientFrame::Moderate(Action::Delete { id: 3 })));
    }

    #[test]
    fn malformed_frames_get_their_codes() {
        assert_eq!(parse("{"), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"message"}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"message","text":5}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"nick"}"#), Err(ErrorCode::BadJson));
        assert_eq!(parse(r#"{"type":"shout","text":"x"}"#), Err(ErrorCode::BadType));
        assert_eq!(parse(r#"{"text":"x"}"#), Err(ErrorCode::BadType));
        assert_eq!(parse(r#"{"type":7}"#), Err(ErrorCode::BadType));
        assert_eq!(parse_client_frame(Incoming::Binary), Err(ErrorCode::Unsupported));
    }

    #[test]
    fn oversized_frames_are_refused_unparsed() {
        let huge = format!(r#"{{"type":"message","text":"{}"}}"#, "a".repeat(MAX_FRAME_BYTES));
        assert_eq!(parse(&huge), Err(ErrorCode::TooLong));
        assert_eq!(parse(&"b".repeat(1 << 20)), Err(ErrorCode::TooLong));
    }

    #[test]
    fn the_longest_text_fits_a_frame_however_it_is_escaped() {
        // Python's json.dumps escapes every non-ASCII character: an emoji is a surrogate pair.
        let emoji = |n: usize| "\\ud83d\\ude00".repeat(n);
        for (n, expected) in [(1_500, None), (MAX_TEXT_CHARS, None), (MAX_TEXT_CHARS + 1, Some(ErrorCode::TooLong))] {
            let frame = format!(r#"{{"type": "message", "text": "{}"}}"#, emoji(n));
            assert!(frame.len() <= MAX_FRAME_BYTES, "{n}");
            let text = match parse(&frame) {
                Ok(ClientFrame::Message { text, .. }) => text,
                other => panic!("{n}: {other:?}"),
            };
            assert_eq!(text.chars().count(), n);
            assert_eq!(clean_text(&text).err(), expected, "{n}");
        }
        // The envelope leaves room for the other fields a message frame may carry.
        let padded = format!(r#"{{"type":"message","text":"{}","cid":"{}","reply_to":18446744073709551615}}"#, emoji(2_000), "c".repeat(64));
        assert!(padded.len() + 512 <= MAX_FRAME_BYTES);
    }

    #[test]
    fn invisible_characters_alone_are_empty() {
        for text in ["\u{200B}", "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}", " \u{200B} \n\u{FEFF}\t", "\u{3000}\u{200D}\u{00A0}"] {
            assert_eq!(clean_text(text), Err(ErrorCode::Empty), "{text:?}");
        }
        assert_eq!(clean_text("\u{200B}a\u{200B}"), Ok("\u{200B}a\u{200B}".into()), "visible text keeps them");
        assert_eq!(clean_text("\u{1F468}\u{200D}\u{1F469}"), Ok("\u{1F468}\u{200D}\u{1F469}".into()), "a joined emoji");
        assert_eq!(clean_text("e\u{301}"), Ok("e\u{301}".into()));
    }

    #[test]
    fn longest_escaped_message_still_fits_a_frame() {
        let text = "\u{1}".repeat(MAX_TEXT_CHARS);
        let frame = json!({"type": "message", "text": text}).to_string();
        assert!(frame.len() <= MAX_FRAME_BYTES);
        assert!(parse(&frame).is_ok());
    }

    #[test]
    fn an_array_frame_is_read_item_by_item() {
        let items = split_array(r#"[{"type":"message","text":"a","cid":"c1"},{"type":"typing"},"b",{"type":"nope"}]"#).unwrap();
        let frames: Vec<_> = items.iter().map(|item| parse_client_frame(Incoming::Item(item))).collect();
        assert_eq!(
            frames,
            [
                Ok(ClientFrame::Message { text: "a".into(), cid: Some("c1".into()), reply_to: None }),
                Ok(ClientFrame::Typing),
                Err(ErrorCode::BadJson),
                Err(ErrorCode::BadType),
            ]
        );
    }

    #[test]
    fn an_array_frame_that_is_not_an_array_of_1_to_64_items_is_refused_whole() {
        let item = r#"{"type":"message","text":"a"}"#;
        assert_eq!(split_array(&format!("[{}]", vec![item; MAX_ARRAY_ITEMS].join(","))).map(|v| v.len()), Ok(MAX_ARRAY_ITEMS));
        for bad in ["[]", "[{", "[1,]", "[\"a\"] tail", &format!("[{}]", vec![item; MAX_ARRAY_ITEMS + 1].join(","))] {
            assert_eq!(split_array(bad), Err(ErrorCode::BadJson), "{bad}");
        }
        assert_eq!(split_array(&format!("[\"{}\"]", "a".repeat(MAX_FRAME_BYTES))), Err(ErrorCode::TooLong));
        assert_eq!(parse_client_frame(Incoming::BadArray(ErrorCode::BadJson)), Err(ErrorCode::BadJson));
    }

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        assert_eq!(clean_text("  hi \n"), Ok("hi".into()));
        assert_eq!(clean_text(" \t\n "), Err(ErrorCode::Empty));
        assert_eq!(clean_text(""), Err(ErrorCode::Empty));
        let at_limit = "é".repeat(MAX_TEXT_CHARS);
        assert_eq!(clean_text(&at_limit), Ok(at_limit.clone()));
        assert_eq!(clean_text(&"é".repeat(MAX_TEXT_CHARS + 1)), Err(ErrorCode::TooLong));
        assert_eq!(parse_client_frame(Incoming::Oversized), Err(ErrorCode::TooLong));
    }

    #[test]
    fn control_characters_are_bad_text_but_tabs_and_line_breaks_are_not() {
        for bad in ["a\u{0}b", "a\u{1}", "\u{1b}[31mred", "a\u{7f}", "a\u{85}b", "a\u{9f}", "x\u{8}y"] {
            assert_eq!(clean_text(bad), Err(ErrorCode::BadText), "{bad:?}");
        }
        assert_eq!(clean_text("a\tb\nc\rd"), Ok("a\tb\nc\rd".into()));
        assert_eq!(clean_text("one\r\ntwo\r\n\r\nthree"), Ok("one\ntwo\n\nthree".into()), "CRLF becomes LF");
        assert_eq!(clean_text(&"\u{1}".repeat(MAX_TEXT_CHARS)), Err(ErrorCode::BadText));
        assert_eq!(clean_text("\u{a0}non-breaking\u{200b}zero-width"), Ok("non-breaking\u{200b}zero-width".into()));
    }

    #[test]
    fn more_than_four_combining_marks_in_a_row_are_bad_text() {
        let marks = |n: usize| format!("e{}", "\u{301}".repeat(n));
        assert!(clean_text(&marks(4)).is_ok());
        assert_eq!(clean_text(&marks(5)), Err(ErrorCode::BadText));
        assert_eq!(clean_text(&format!("{}x{}", marks(4), marks(4))).map(|t| t.chars().count()), Ok(11), "per base character");
        assert_eq!(clean_text(&"\u{301}".repeat(5)), Err(ErrorCode::BadText), "marks with no base at all");
        assert_eq!(clean_text("\u{20d0}\u{20d1}\u{20d2}\u{20d3}\u{20d4}a"), Err(ErrorCode::BadText), "enclosing and other marks");
        for fine in ["naïve café", "👨‍👩‍👧‍👦 family", "ベトナム語: Tiếng Việt", "हिन्दी", "🇫🇷"] {
            assert!(clean_text(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn json_len_is_what_serde_json_writes() {
        for text in ["hi", "", "\"quoted\" \\ back", "tab\tnew\nline\rcr", "\u{1}\u{8}\u{c}\u{1f}\u{7f}", "é✓😀", "</script>"] {
            for (id, at) in [(0, 0), (9, 10), (1 << 53, u64::MAX)] {
                let message = ChatMessage { id, nick: "Ann-1".into(), text: text.into(), at, deleted: false, uid: None, ..Default::default() };
                assert_eq!(message.json_len(), serde_json::to_string(&message).unwrap().len(), "{text:?}");
                let ticketed = ChatMessage { uid: Some("u\"1".into()), ..message.clone() };
                assert_eq!(ticketed.json_len(), serde_json::to_string(&ticketed).unwrap().len(), "{text:?}");
                let tombstone = ChatMessage { text: String::new(), deleted: true, ..message.clone() };
                assert_eq!(tombstone.json_len(), serde_json::to_string(&tombstone).unwrap().len());
                let reactions = [("👍".to_owned(), 3), ("🎉".to_owned(), 12)].into_iter().collect();
                let rich = ChatMessage {
                    seq: at,
                    reply_to: Some(id),
                    edited_at: Some(at),
                    reactions,
                    cid: Some("c-1".into()),
                    ..message.clone()
                };
                assert_eq!(rich.json_len(), serde_json::to_string(&rich).unwrap().len(), "{text:?}");
                let one = ChatMessage { reactions: [("❤️".to_owned(), 1)].into_iter().collect(), ..message };
                assert_eq!(one.json_len(), serde_json::to_string(&one).unwrap().len());
                assert_eq!(tombstone.json_len(), serde_json::to_string(&tombstone).unwrap().len());
            }
        }
    }

    #[test]
    fn html_is_data_not_escaped() {
        let message =
            ChatMessage {
            id: 1,
            nick: "a".into(),
            text: "<img src=x onerror=alert(1)>".into(),
            at: 2,
            ..Default::default()
        };
        let value: Value = serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap();
        assert_eq!(value["text"], "<img src=x onerror=alert(1)>");
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let message = ChatMessage { id: 3, nick: "Ann".into(), text: "hi".into(), at: 9, seq: 4, ..Default::default() };
        let as_json = |f: ServerFrame| serde_json::from_str::<Value>(&f.to_json()).unwrap();
        assert_eq!(
            serde_json::to_string(&message).unwrap(),
            r#"{"type":"message","id":3,"nick":"Ann","text":"hi","at":9,"seq":4}"#,
            "exactly these fields, type once"
        );
        let ticketed = ChatMessage { uid: Some("u1".into()), ..message.clone() };
        assert_eq!(
            serde_json::to_string(&ticketed).unwrap(),
            r#"{"type":"message","id":3,"nick":"Ann","text":"hi","at":9,"seq":4,"uid":"u1"}"#
        );
        let tombstone = ChatMessage { text: String::new(), deleted: true, ..message.clone() };
        assert_eq!(
            serde_json::to_string(&tombstone).unwrap(),
            r#"{"type":"message","id":3,"nick":"Ann","at":9,"seq":4,"deleted":true}"#,
            "a tombstone never carries text"
        );
        assert_eq!(as_json(ServerFrame::Deleted { id: 3, at: 5, seq: 6 }), json!({"type": "deleted", "id": 3, "at": 5, "seq": 6}));
        let rich = ChatMessage {
            reply_to: Some(1),
            edited_at: Some(10),
            reactions: [("👍".to_owned(), 2)].into_iter().collect(),
            cid: Some("c1".into()),
            ..message.clone()
        };
        assert_eq!(
            serde_json::to_string(&rich).unwrap(),
            r#"{"type":"message","id":3,"nick":"Ann","text":"hi","at":9,"seq":4,"reply_to":1,"edited_at":10,"reactions":{"👍":2},"cid":"c1"}"#
        );
        assert_eq!(
            as_json(ServerFrame::Edited { id: 3, text: "new".into(), edited_at: 7, seq: 8 }),
            json!({"type": "edited", "id": 3, "text": "new", "edited_at": 7, "seq": 8})
        );
        assert_eq!(
            as_json(ServerFrame::Reactions { id: 3, counts: [("👍".to_owned(), 2)].into_iter().collect(), seq: 9 }),
            json!({"type": "reactions", "id": 3, "counts": {"👍": 2}, "seq": 9})
        );
        assert_eq!(as_json(ServerFrame::Typing { nick: "Ann".into(), until: 6 }), json!({"type": "typing", "nick": "Ann", "until": 6}));
        assert_eq!(
            as_json(ServerFrame::Moderated { action: "kick", target: Some("Bob".into()), by: "admin".into(), at: 5 }),
            json!({"type": "moderated", "action": "kick", "target": "Bob", "by": "admin", "at": 5})
        );
        assert_eq!(
            as_json(ServerFrame::Welcome {
                room: "lobby".into(),
                nick: "Ann".into(),
                users: vec!["Ann".into()],
                history: vec![message],
                you: You { nick: "Ann".into(), id: None, role: Role::Member },
                seq: 4,
                cleared: false,
            }),
            json!({"type": "welcome", "room": "lobby", "nick": "Ann", "users": ["Ann"],
                   "history": [{"type": "message", "id": 3, "nick": "Ann", "text": "hi", "at": 9, "seq": 4}],
                   "you": {"nick": "Ann", "id": null, "role": "member"}, "seq": 4})
        );
        assert_eq!(as_json(ServerFrame::Joined { nick: "B".into(), at: 1 }), json!({"type": "joined", "nick": "B", "at": 1}));
        assert_eq!(as_json(ServerFrame::Left { nick: "B".into(), at: 1 }), json!({"type": "left", "nick": "B", "at": 1}));
        assert_eq!(
            as_json(ServerFrame::Renamed { from: "B".into(), to: "C".into(), at: 1 }),
            json!({"type": "renamed", "from": "B", "to": "C", "at": 1})
        );
        assert_eq!(
            as_json(ServerFrame::error(ErrorCode::NickTaken)),
            json!({"type": "error", "code": "nick_taken", "message": ErrorCode::NickTaken.message()})
        );
    }

    #[test]
    fn every_code_has_a_snake_case_name_and_a_sentence() {
        let names: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| serde_json::to_value(c).unwrap().as_str().unwrap().to_owned())
            .collect();
        for expected in [
            "too_long", "empty", "bad_json", "bad_type", "unsupported", "bad_nick", "nick_taken", "rate_limited",
            "unavailable", "forbidden", "ticket_expired", "not_found", "slow_mode", "banned", "bad_text", "too_many_connections",
            "too_late", "bad_emoji",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
        for code in ErrorCode::ALL {
            assert!(code.message().ends_with('.'));
        }
    }
}
