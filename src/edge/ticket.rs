//! Tickets: how an application vouches for its users. A ticket is a compact JWT signed with
//! HS256 under the operator's `TICKET_SECRET`, carrying the user's stable id (`sub`), the nick
//! to show (`name`), the rooms it opens (`room`: a name, a `prefix*` or `*`), a `role`, and
//! an expiry. The Worker verifies it before any room is touched, and only the identity it
//! proves travels on: the ticket itself is never stored, logged or echoed.
//!
//! The checks are strict on purpose: only `alg: HS256` (so neither `none` nor a public-key
//! algorithm fed the secret as a key can pass), a signature compared in constant time, at most
//! a minute of clock skew, and nothing decoded from a token larger than 4 KiB.

use crate::chat::identity::{Identity, Role};
use crate::chat::nicknames::validate_nick;
use crate::edge::routes::room_name;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// Larger tokens are refused before anything is decoded.
pub const MAX_TICKET_BYTES: usize = 4 * 1024;

/// Clocks of the application and of the edge may disagree by this much.
pub const CLOCK_SKEW_S: u64 = 60;

/// A shorter secret can be guessed; private rooms then fail closed (`misconfigured`).
pub const MIN_SECRET_BYTES: usize = 32;

pub const MAX_SUB_CHARS: usize = 64;

/// The rooms a ticket opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomScope {
    Every,
    Prefix(String),
    Exact(String),
}

impl RoomScope {
    fn parse(claim: &str) -> Option<RoomScope> {
        if claim == "*" {
            return Some(RoomScope::Every);
        }
        if let Some(prefix) = claim.strip_suffix('*') {
            // A prefix is the start of a room name, so it is made of room-name characters.
            let valid = prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            return valid.then(|| RoomScope::Prefix(prefix.to_owned()));
        }
        (room_name(claim).ok()? == claim).then(|| RoomScope::Exact(claim.to_owned()))
    }

    pub fn covers(&self, room: &str) -> bool {
        match self {
            RoomScope::Every => true,
            RoomScope::Prefix(prefix) => room.starts_with(prefix.as_str()),
            RoomScope::Exact(name) => name == room,
        }
    }
}

/// A ticket whose signature and claims checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub identity: Identity,
    pub rooms: RoomScope,
}

/// Why a ticket was refused. Deliberately coarse: a client learns that its ticket is bad or
/// expired, never which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    Bad,
    Expired,
}

/// Verifies `token` under `secret` at `now_s` (Unix seconds).
pub fn verify(token: &str, secret: &[u8], now_s: u64) -> Result<Ticket, TicketError> {
    if token.len() > MAX_TICKET_BYTES {
        return Err(TicketError::Bad);
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TicketError::Bad)?;
    let (header, payload) = signing_input.split_once('.').ok_or(TicketError::Bad)?;
    let header = json_object(header)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") || header.contains_key("crit") {
        return Err(TicketError::Bad);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TicketError::Bad)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TicketError::Bad)?;
    mac.update(signing_input.as_bytes());
    // Constant time: `verify_slice` compares without an early exit.
    mac.verify_slice(&signature).map_err(|_| TicketError::Bad)?;
    claims(&json_object(payload)?, now_s)
}

fn json_object(segment: &str) -> Result<Map<String, Value>, TicketError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| TicketError::Bad)?;
    // Read as a str, as every other JSON is: `from_slice` would be a second copy of the parser.
    let text = String::from_utf8(bytes).map_err(|_| TicketError::Bad)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(TicketError::Bad),
    }
}

fn claims(claims: &Map<String, Value>, now_s: u64) -> Result<Ticket, TicketError> {
    let string = |name: &str| claims.get(name).and_then(Value::as_str).ok_or(TicketError::Bad);
    let time = |name: &str| claims.get(name).map(|v| v.as_u64().ok_or(TicketError::Bad)).transpose();

    let expires = time("exp")?.ok_or(TicketError::Bad)?;
    if time("nbf")?.is_some_and(|not_before| not_before > now_s.saturating_add(CLOCK_SKEW_S)) {
        return Err(TicketError::Bad);
    }
    let valid_until = expires.saturating_add(CLOCK_SKEW_S);
    if now_s > valid_until {
        return Err(TicketError::Expired);
    }
    let sub = string("sub")?;
    let sub_chars = sub.chars().count();
    if sub_chars == 0 || sub_chars > MAX_SUB_CHARS || sub.chars().any(char::is_control) {
        return Err(TicketError::Bad);
    }
    let name = validate_nick(string("name")?).map_err(|_| TicketError::Bad)?;
    let rooms = RoomScope::parse(string("room")?).ok_or(TicketError::Bad)?;
    let role = match claims.get("role") {
        None => Role::Member,
        Some(role) => role.as_str().and_then(Role::parse).ok_or(TicketError::Bad)?,
    };
    let identity = Identity {
        id: sub.to_owned(),
        name: name.to_owned(),
        role,
        expires_at: valid_until.saturating_mul(1000),
    };
    Ok(Ticket { identity, rooms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"sub": "u1", "name": "Ann", "room": "lobby", "role": "moderator", "exp": NOW + 3600})
    }

    fn with(changes: Value) -> Value {
        let mut claims = claims();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(key);
            } else {
                claims[key] = value.clone();
            }
        }
        claims
    }

    fn check(claims: &Value) -> Result<Ticket, TicketError> {
        verify(&sign(claims, SECRET), SECRET, NOW)
    }

    /// Signs `claims` the way an application would (scripts/ticket.mjs in JavaScript).
    fn sign(claims: &Value, secret: &[u8]) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn encode(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_good_ticket_yields_its_identity() {
        let ticket = check(&claims()).unwrap();
        assert_eq!(
            ticket.identity,
            Identity { id: "u1".into(), name: "Ann".into(), role: Role::Moderator, expires_at: (NOW + 3660) * 1000 }
        );
        assert_eq!(ticket.rooms, RoomScope::Exact("lobby".into()));
        assert_eq!(check(&with(json!({"role": null}))).unwrap().identity.role, Role::Member, "member by default");
        assert!(check(&with(json!({"extra": [1, 2], "iss": "app"}))).is_ok(), "unknown claims are ignored");
    }

    #[test]
    fn forged_or_altered_tickets_are_bad() {
        let token = sign(&claims(), SECRET);
        assert_eq!(verify(&token, b"another secret of 32 bytes......", NOW), Err(TicketError::Bad));
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let admin = encode(&with(json!({"room": "*"})).to_string());
        assert_eq!(verify(&format!("{head}.{admin}.{signature}"), SECRET, NOW), Err(TicketError::Bad));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify(&String::from_utf8(flipped).unwrap(), SECRET, NOW), Err(TicketError::Bad));
    }

    #[test]
    fn only_hs256_is_accepted() {
        let payload = encode(&claims().to_string());
        let none = format!("{}.{payload}.", encode(r#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(verify(&none, SECRET, NOW), Err(TicketError::Bad));
        // RS256 "signed" with the secret as an HMAC key: the classic confusion attack.
        let header = encode(r#"{"alg":"RS256","typ":"JWT"}"#);
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        let confused = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        assert_eq!(verify(&confused, SECRET, NOW), Err(TicketError::Bad));
        for header in [r#"{"alg":"hs256"}"#, r#"{"typ":"JWT"}"#, r#"{"alg":"HS256","crit":["exp"]}"#, "[]"] {
            let header = encode(header);
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
            mac.update(format!("{header}.{payload}").as_bytes());
            let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
            assert_eq!(verify(&token, SECRET, NOW), Err(TicketError::Bad), "{header}");
        }
    }

    #[test]
    fn expiry_and_not_before_allow_a_minute_of_skew() {
        assert!(check(&with(json!({"exp": NOW - 60}))).is_ok());
        assert_eq!(check(&with(json!({"exp": NOW - 61}))).unwrap_err(), TicketError::Expired);
        assert!(check(&with(json!({"nbf": NOW + 60}))).is_ok());
        assert_eq!(check(&with(json!({"nbf": NOW + 61}))).unwrap_err(), TicketError::Bad);
        assert_eq!(check(&with(json!({"exp": null}))).unwrap_err(), TicketError::Bad, "exp is required");
        assert_eq!(check(&with(json!({"exp": "soon"}))).unwrap_err(), TicketError::Bad);
        assert_eq!(check(&with(json!({"exp": 1.5e9}))).unwrap_err(), TicketError::Bad);
    }

    #[test]
    fn claims_are_validated() {
        for changes in [
            json!({"sub": null}),
            json!({"sub": ""}),
            json!({"sub": "u".repeat(65)}),
            json!({"sub": "a\nb"}),
            json!({"sub": 7}),
            json!({"name": null}),
            json!({"name": "no spaces"}),
            json!({"room": null}),
            json!({"room": "a/b"}),
            json!({"room": "a%2Fb"}),
            json!({"room": "te am*"}),
            json!({"role": "admin"}),
            json!({"role": 1}),
        ] {
            assert_eq!(check(&with(changes.clone())).unwrap_err(), TicketError::Bad, "{changes}");
        }
        assert!(check(&with(json!({"sub": "é".repeat(64)}))).is_ok(), "64 characters, not bytes");
    }

    #[test]
    fn room_claims_cover_names_prefixes_or_everything() {
        let rooms = |claim: &str| check(&with(json!({"room": claim}))).unwrap().rooms;
        assert!(rooms("lobby").covers("lobby"));
        assert!(!rooms("lobby").covers("lobby2"));
        assert!(rooms("team-42-*").covers("team-42-design"));
        assert!(rooms("team-42-*").covers("team-42-"));
        assert!(!rooms("team-42-*").covers("team-43-design"));
        assert!(rooms("*").covers("anything"));
    }

    #[test]
    fn malformed_tokens_are_bad_and_large_ones_are_not_decoded() {
        let token = sign(&claims(), SECRET);
        let payload_not_json = format!("{}.{}.x", encode(r#"{"alg":"HS256"}"#), encode("not json"));
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.???.***",
            payload_not_json.as_str(),
            &format!("{token}="),
            &format!("{token}.x"),
        ] {
            assert_eq!(verify(token, SECRET, NOW), Err(TicketError::Bad), "{token:?}");
        }
        let padded = sign(&with(json!({"pad": "x".repeat(MAX_TICKET_BYTES)})), SECRET);
        assert_eq!(verify(&padded, SECRET, NOW), Err(TicketError::Bad));
    }
}
