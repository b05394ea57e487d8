//! Property tests over the room core: whatever a client or a URL throws at it, nothing
//! panics and every refusal is one of the documented codes. A panic in the Worker would kill
//! the WASM instance for every room in the isolate, so these run on every `cargo test`.

use crate::chat::identity::{Identity, Role};
use crate::edge::config::RoomLimits;
use crate::edge::ticket;
use crate::chat::nicknames::validate_nick;
use crate::edge::origin::AllowedOrigins;
use crate::chat::protocol::{parse_client_frame, ClientFrame, ErrorCode, Incoming, ServerFrame};
use crate::chat::rate_limit::RateLimit;
use crate::chat::room::{Reaction, Room};
use crate::edge::routes::{route, RequestError, RequestParts, Route};
use proptest::prelude::*;
use serde_json::Value;

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
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_frame_parses_or_maps_to_a_documented_code(frame in client_frame()) {
        match parse_client_frame(Incoming::Text(&frame)) {
            Ok(ClientFrame::Message { .. } | ClientFrame::Nick { .. } | ClientFrame::Moderate(_)) => {}
            Err(code) => prop_assert!(ErrorCode::ALL.contains(&code)),
        }
    }

    #[test]
    fn a_room_survives_any_sequence_of_frames(frames in prop::collection::vec((0usize..3, client_frame()), 1..60)) {
        let limits = RoomLimits { rate: RateLimit { burst: 5, per_second: 1 }, max_sockets: 10 };
        let mut room = Room::new(limits, 0, 0);
        let mut seed = 0u64;
        // Socket 0 is anonymous; 1 and 2 are two tabs of one ticket identity called "Same" too.
        let same = Identity { id: "u1".into(), name: "Same".into(), role: Role::Member, expires_at: 3_000 };
        for socket in 0..3 {
            let identity = (socket > 0).then(|| same.clone());
            let role = if socket == 2 { Role::Moderator } else { Role::Member };
            let identity = identity.map(|user| Identity { role, ..user });
            room.join(socket.to_string(), Some("Same"), identity, None, 0, || { seed += 1; seed });
        }
        let mut last_id = 0;
        for (now, (socket, frame)) in frames.iter().enumerate() {
            match room.receive(&socket.to_string(), Incoming::Text(frame), now as u64 * 100) {
                Reaction::Post(message) => {
                    prop_assert!(message.id > last_id);
                    last_id = message.id;
                    prop_assert!(!message.text.is_empty() && message.text.chars().count() <= 2000);
                }
                Reaction::Reply(ServerFrame::Error { code, .. }) => prop_assert!(ErrorCode::ALL.contains(&code)),
                Reaction::Renamed { attachment, .. } => prop_assert!(validate_nick(&attachment.nick).is_ok()),
                Reaction::Nothing | Reaction::Kick { .. } | Reaction::Moderate(_) => {}
                Reaction::Reply(other) => prop_assert!(false, "unexpected reply {other:?}"),
            }
        }
        let nicks = room.nicks();
        let mut keys: Vec<String> = nicks.iter().map(|n| n.to_ascii_lowercase()).collect();
        keys.dedup();
        prop_assert_eq!(keys.len(), nicks.len(), "nicks stay unique");
    }

    #[test]
    fn any_request_routes_or_is_refused_with_a_status(
        path in "(/chat(/[^/?#]{0,70}){0,3})|(/[ -~]{0,40})",
        query in proptest::option::of("[ -~]{0,60}"),
        origin in proptest::option::of("[ -~]{0,30}"),
        upgrade in any::<bool>(),
    ) {
        let parts = RequestParts {
            method: "GET",
            path: &path,
            query: query.as_deref(),
            upgrade: upgrade.then_some("websocket"),
            origin: origin.as_deref(),
            own_origin: "http://localhost:8787",
        };
        match route(&parts, &AllowedOrigins::parse("https://a.example")) {
            Ok(Route::Health) => {}
            Ok(ok) => {
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
}
