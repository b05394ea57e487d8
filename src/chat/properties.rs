//! Property tests over the room core: whatever a client or a URL throws at it, nothing
//! panics and every refusal is one of the documented codes. A panic in the Worker would kill
//! the WASM instance for every room in the isolate, so these run on every `cargo test`.

use crate::chat::identity::{Identity, Role};
use crate::chat::clients::ClientKey;
use crate::chat::history::{Window, BYTE_BUDGET};
use crate::chat::protocol::{clean_text, encode_post, ChatMessage, MAX_COMBINING_MARKS};
use crate::edge::config::RoomLimits;
use crate::edge::ticket;
use crate::chat::nicknames::validate_nick;
use crate::edge::origin::AllowedOrigins;
use crate::chat::protocol::{parse_client_frame, ClientFrame, ErrorCode, Incoming, ServerFrame};
use crate::chat::rate_limit::RateLimit;
use crate::chat::messages::memory::MemoryHistory;
use crate::chat::room::{Reaction, Room};
use crate::edge::routes::{route, Handshake, RequestError, RequestParts, Route};
use proptest::prelude::*;
use crate::chat::socketio;
use serde_json::{json, Value};

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<i64>().prop_map(|i| Value::Number(i.into())),
        ".{0,40}".prop_map(Value::String),
        prop_oneof![Just("message"), Just("nick"), Just("type"), Just("text"), Just("kick"), Just("ban"), Just("Same")].prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("type".to_owned()), Just("text".to_owned()), Just("nick".to_owned()), ".{0,8}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn client_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        arbitrary_json().prop_map(|v| v.to_string()),
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "\\{.{0,64}",
        history_frame(),
    ]
}

/// Frames that change history, aimed at a few ids so that they hit real messages: messages
/// (some resent with a cid, some replies), edits, deletes, reactions (valid or not) and typing.
fn history_frame() -> impl Strategy<Value = String> {
    let id = 0u64..8;
    let emoji = prop_oneof![Just("👍".to_owned()), Just("🎉".to_owned()), Just("🇫🇷".to_owned()), ".{0,6}"];
    let cid = proptest::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned()), "[a-z_-]{1,3}"]);
    prop_oneof![
        (".{0,12}", cid, proptest::option::of(id.clone()))
            .prop_map(|(text, cid, reply_to)| serde_json::json!({"type": "message", "text": text, "cid": cid, "reply_to": reply_to}).to_string()),
        (id.clone(), ".{0,12}").prop_map(|(id, text)| serde_json::json!({"type": "edit", "id": id, "text": text}).to_string()),
        id.clone().prop_map(|id| serde_json::json!({"type": "delete", "id": id}).to_string()),
        (id, emoji).prop_map(|(id, emoji)| serde_json::json!({"type": "react", "id": id, "emoji": emoji}).to_string()),
        Just(r#"{"type":"typing"}"#.to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_frame_parses_or_maps_to_a_documented_code(frame in client_frame()) {
        match parse_client_frame(Incoming::Text(&frame)) {
            Ok(
                ClientFrame::Message { .. }
                | ClientFrame::Nick { .. }
                | ClientFrame::Edit { .. }
                | ClientFrame::React { .. }
                | ClientFrame::Typing
                | ClientFrame::Moderate(_),
            ) => {}
            Err(code) => prop_assert!(ErrorCode::ALL.contains(&code)),
        }
    }

    #[test]
    fn a_room_survives_any_sequence_of_frames(frames in prop::collection::vec((0usize..3, client_frame()), 1..60)) {
        let limits = RoomLimits {
            rate: RateLimit { burst: 5, per_second: 1 },
            client: RateLimit { burst: 7, per_second: 2 },
            room: RateLimit { burst: 9, per_second: 9 },
            client_joins: 2,
            max_client_sockets: 2,
            max_sockets: 10,
            edit_window_ms: 1_000,
        };
        let mut room = Room::new(limits, 0, 0);
        let mut seed = 0u64;
        // Socket 0 is anonymous; 1 and 2 are two tabs of one ticket identity called "Same" too.
        let same = Identity { id: "u1".into(), name: "Same".into(), role: Role::Member, expires_at: 3_000 };
        for socket in 0..3 {
            let identity = (socket > 0).then(|| same.clone());
            let role = if socket == 2 { Role::Moderator } else { Role::Member };
            let identity = identity.map(|user| Identity { role, ..user });
            // Sockets 0 and 1 are one client, 2 another.
            let client = ClientKey::of(if socket < 2 { "a" } else { "b" }, [0, 0]);
            prop_assert!(room.admit(client, identity.as_ref(), None, 0).is_ok());
            // Socket 0 names a client id, so that its sender key is that id.
            let client_id = (socket == 0).then(|| "tab-0".to_owned());
            room.join(socket.to_string(), client, Some("Same"), identity, None, client_id, 0, || { seed += 1; seed });
        }
        // The store, in memory: every decided change is carried out as the object would.
        let mut history = MemoryHistory::default();
        let (mut last_id, mut last_seq) = (0, 0);
        let mut grows = |seq: u64| {
            let grew = seq > last_seq;
            last_seq = seq;
            grew
        };
        for (now, (socket, frame)) in frames.iter().enumerate() {
            match room.receive(&socket.to_string(), Incoming::Text(frame), now as u64 * 100, &history) {
                Reaction::Post { message, sender, cid } => {
                    prop_assert!(message.id > last_id);
                    prop_assert!(grows(message.seq), "seq grows strictly");
                    last_id = message.id;
                    prop_assert!(!message.text.is_empty() && message.text.chars().count() <= 2000);
                    prop_assert!(message.text.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')));
                    prop_assert!(message.cid.is_none(), "the broadcast copy carries no cid");
                    if let Some(reply_to) = message.reply_to {
                        prop_assert!(history.messages.contains_key(&reply_to));
                    }
                    history.post(&message, &sender, cid.as_deref());
                }
                Reaction::Resend(message) => {
                    prop_assert!(history.messages.contains_key(&message.id), "a resend names a stored message");
                    prop_assert!(message.cid.is_some());
                }
                Reaction::Change(change) => {
                    prop_assert!(grows(change.seq()), "seq grows strictly");
                    prop_assert!(history.apply(&change), "a change names a stored message");
                }
                Reaction::Moderate(moderation) => {
                    if let Some(change) = moderation.deleted {
                        prop_assert!(grows(change.seq()), "seq grows strictly");
                        prop_assert!(history.apply(&change));
                    }
                }
                Reaction::Typing(ServerFrame::Typing { until, .. }) => prop_assert_eq!(until, now as u64 * 100 + 6_000),
                Reaction::Reply(ServerFrame::Error { code, .. }) => prop_assert!(ErrorCode::ALL.contains(&code)),
                Reaction::Renamed { attachment, .. } => prop_assert!(validate_nick(&attachment.nick).is_ok()),
                Reaction::Nothing | Reaction::Kick { .. } => {}
                Reaction::Reply(other) | Reaction::Typing(other) => prop_assert!(false, "unexpected frame {other:?}"),
            }
        }
        for (stored, _) in history.messages.values() {
            prop_assert!(stored.message.seq <= last_seq);
            prop_assert!(stored.message.reactions.len() <= 20);
            prop_assert_eq!(stored.message.reactions.iter().map(|(_, count)| count).sum::<u32>() as usize, stored.reactors.len());
        }
        let nicks = room.nicks();
        let mut keys: Vec<String> = nicks.iter().map(|n| n.to_ascii_lowercase()).collect();
        keys.dedup();
        prop_assert_eq!(keys.len(), nicks.len(), "nicks stay unique");
    }

    #[test]
    fn any_text_is_cleaned_or_refused_and_its_json_length_is_exact(
        text in prop_oneof![".{0,80}", "[a-z\u{300}-\u{36f}\u{0}-\u{1f}\u{7f}-\u{9f}\r\n ]{0,40}"],
    ) {
        match clean_text(&text) {
            Ok(clean) => {
                prop_assert!(!clean.is_empty() && !clean.contains("\r\n"));
                prop_assert!(clean.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')));
                let message = ChatMessage { id: 1, nick: "n".into(), text: clean, at: 2, deleted: false, uid: None, ..Default::default() };
                prop_assert_eq!(message.json_len(), serde_json::to_string(&message).unwrap().len());
            }
            Err(code) => prop_assert!(matches!(code, ErrorCode::Empty | ErrorCode::TooLong | ErrorCode::BadText)),
        }
        let _ = MAX_COMBINING_MARKS;
    }

    #[test]
    fn a_senders_own_copy_is_the_message_serialised_with_its_cid(
        text in ".{0,20}",
        cid in prop::option::of("[ -~\u{0}-\u{1f}é😀]{0,12}"),
        uid in prop::option::of("[a-z\"]{1,6}"),
        reply_to in prop::option::of(any::<u64>()),
        reactions in prop::collection::vec(("[👍🎉a\"]{1,2}", 1u32..50), 0..3),
    ) {
        let reactions = reactions.into_iter().collect();
        let message = ChatMessage { id: 7, nick: "n\"1".into(), text, at: 9, seq: 8, uid, reply_to, reactions, ..Default::default() };
        let (json, own) = encode_post(&message, cid.as_deref()).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&message).unwrap());
        let expected = cid.clone().map(|cid| serde_json::to_string(&ChatMessage { cid: Some(cid), ..message }).unwrap());
        prop_assert_eq!(own, expected);
    }

    #[test]
    fn history_never_exceeds_its_byte_budget(sizes in prop::collection::vec(0usize..2_000, 0..60), latest in any::<bool>()) {
        let mut messages: Vec<ChatMessage> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| ChatMessage { id: i as u64 + 1, nick: "n".into(), text: "€".repeat(n), at: 0, deleted: false, uid: None, ..Default::default() })
            .collect();
        let before = messages.len();
        let window = if latest { Window::Latest { limit: 100 } } else { Window::After { since: 0, limit: 100 } };
        window.fit_budget(&mut messages);
        prop_assert!(serde_json::to_string(&messages).unwrap().len() <= BYTE_BUDGET + 2);
        prop_assert!(before == 0 || !messages.is_empty());
    }

    #[test]
    fn any_request_routes_or_is_refused_with_a_status(
        path in "(/chat(/[^/?#]{0,70}){0,3})|(/[ -~]{0,40})|(/socket\\.io/?)",
        query in proptest::option::of(prop_oneof!["[ -~]{0,60}", "EIO=4&transport=(websocket|polling)&[ -~]{0,60}"]),
        origin in proptest::option::of("[ -~]{0,30}"),
        upgrade in any::<bool>(),
        connection in proptest::option::of("[ -~]{0,20}"),
        key in proptest::option::of(prop_oneof!["[A-Za-z0-9+/=]{0,30}", Just("dGhlIHNhbXBsZSBub25jZQ==".to_owned())]),
        version in proptest::option::of(prop_oneof!["[ -~]{0,4}", Just("13".to_owned())]),
        address in proptest::option::of("[ -~]{0,40}"),
        last_event_id in proptest::option::of("[ -~]{0,24}"),
    ) {
        let parts = RequestParts {
            method: "GET",
            path: &path,
            query: query.as_deref(),
            upgrade: upgrade.then_some("websocket"),
            handshake: Handshake { connection: connection.as_deref(), key: key.as_deref(), version: version.as_deref() },
            origin: origin.as_deref(),
            client_address: address.as_deref(),
            own_origin: "http://localhost:8787",
            accept: Some("text/event-stream"),
            last_event_id: last_event_id.as_deref(),
        };
        match route(&parts, &AllowedOrigins::parse("https://a.example")) {
            Ok(Route::Health) => {}
            Ok(ok) => {
                prop_assert_eq!(Route::from_hop(&ok.to_hop()), Some(ok.clone()), "the room's object reads the route");
                let room = ok.room().expect("chat routes name a room");
                prop_assert!(!room.is_empty() && room.len() <= 64);
                prop_assert!(room.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
                prop_assert!(!room.chars().all(|c| c == '.'));
            }
            Err(error) => {
                prop_assert!((400..600).contains(&error.status()));
                let body: Value = serde_json::from_str(&error.to_json()).unwrap();
                prop_assert_eq!(body["error"]["message"].as_str(), Some(error.message()));
                prop_assert!(error != RequestError::Internal, "routing never fails internally");
            }
        }
    }

    #[test]
    fn any_token_is_verified_or_refused_without_panicking(
        token in prop_oneof![
            "[ -~]{0,200}",
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,60}",
            any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        now in any::<u64>(),
    ) {
        let _ = ticket::verify(&token, b"0123456789abcdef0123456789abcdef", now);
    }

    #[test]
    fn any_nick_is_accepted_only_when_valid(nick in ".{0,40}") {
        if let Ok(valid) = validate_nick(&nick) {
            prop_assert!(valid.len() <= 32 && valid.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
        }
    }

    #[test]
    fn any_socket_io_packet_is_read_or_refused_without_panicking(
        packet in prop_oneof![
            "[0-6]{0,2}(/[ -~]{0,10},)?[0-9]{0,20}.{0,40}",
            ("4[0-6](/chat,)?[0-9]{0,3}", arbitrary_json()).prop_map(|(head, json)| format!("{head}{json}")),
            ("42(/chat,)?", ".{0,8}", arbitrary_json()).prop_map(|(head, name, arg)| format!("{head}{}", json!([name, arg]))),
            any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        match socketio::parse(&packet) {
            socketio::Inbound::Event { frame: Ok(frame), .. } => {
                // What the room reads next is a native frame: it parses or is refused with a documented code.
                let value: Value = serde_json::from_str(&frame).unwrap();
                prop_assert!(value["type"].is_string());
                if let Err(code) = parse_client_frame(Incoming::Text(&frame)) {
                    prop_assert!(ErrorCode::ALL.contains(&code));
                }
            }
            socketio::Inbound::Event { frame: Err(code), .. } => prop_assert!(ErrorCode::ALL.contains(&code)),
            socketio::Inbound::Connect(Err(name)) => prop_assert!(name.len() <= 64 && !name.contains(['"', ',', '\\'])),
            _ => {}
        }
        for body in [packet.as_str(), &format!("{packet}\x1e{packet}")] {
            prop_assert!(socketio::split_payload(body).all(|p| !p.is_empty() && !p.contains('\x1e')));
        }
    }

    #[test]
    fn any_broadcast_frame_encodes_without_panicking(frame in arbitrary_json(), at in any::<u64>()) {
        let mut frame = frame;
        if let Value::Object(fields) = &mut frame {
            fields.insert("at".into(), json!(at));
        }
        for packets in socketio::broadcast(&frame.to_string()) {
            for packet in packets {
                prop_assert!(packet.starts_with("42"));
                let data = packet.trim_start_matches("42").trim_start_matches("/chat,");
                let event: Value = serde_json::from_str(data).unwrap();
                prop_assert!(event[0].is_string());
            }
        }
    }
}
