//! Who may use a room, decided by the Worker before any room is touched. Rooms listed in
//! `PRIVATE_ROOMS` need a ticket that covers them on every route; public rooms take anonymous
//! clients as before, and ticketed ones with their identity. A ticket that is presented is
//! always checked, in public rooms too: a bad one is refused rather than quietly ignored.

use crate::chat::identity::Identity;
use crate::edge::routes::RequestError;
use crate::edge::ticket::{self, TicketError, MIN_SECRET_BYTES};

/// Room names and `prefix*` patterns, as `PRIVATE_ROOMS` lists them (`*`: every room).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoomPatterns(Vec<String>);

impl RoomPatterns {
    pub fn parse(var: &str) -> RoomPatterns {
        RoomPatterns(var.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect())
    }

    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => pattern == room,
        })
    }
}

/// The operator's settings for tickets and private rooms.
pub struct AccessPolicy {
    private: RoomPatterns,
    /// `TICKET_SECRET`, if it is long enough to be trusted.
    secret: Option<Vec<u8>>,
}

/// Why the policy cannot be applied, for the operator's log (never for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misconfiguration {
    NoSecret,
    ShortSecret,
}

impl Misconfiguration {
    pub fn reason(self) -> &'static str {
        match self {
            Misconfiguration::NoSecret => "TICKET_SECRET is not set, so tickets cannot be checked",
            Misconfiguration::ShortSecret => "TICKET_SECRET is shorter than 32 bytes, so tickets cannot be trusted",
        }
    }
}

impl AccessPolicy {
    /// Reads `PRIVATE_ROOMS` and `TICKET_SECRET`. The second value says what is wrong with
    /// the secret, if anything: requests that need it then fail closed.
    pub fn new(private_rooms: &str, secret: Option<&str>) -> (AccessPolicy, Option<Misconfiguration>) {
        let (secret, problem) = match secret.filter(|s| !s.is_empty()) {
            None => (None, Some(Misconfiguration::NoSecret)),
            Some(s) if s.len() < MIN_SECRET_BYTES => (None, Some(Misconfiguration::ShortSecret)),
            Some(s) => (Some(s.as_bytes().to_vec()), None),
        };
        (AccessPolicy { private: RoomPatterns::parse(private_rooms), secret }, problem)
    }

    /// Who is asking for `room`: `None` for an anonymous client of a public room, the
    /// ticket's identity otherwise. `now_s` is Unix seconds.
    pub fn admit(&self, room: &str, ticket: Option<&str>, now_s: u64) -> Result<Option<Identity>, RequestError> {
        let private = self.private.matches(room);
        let Some(ticket) = ticket else {
            return match (private, &self.secret) {
                (false, _) => Ok(None),
                (true, None) => Err(RequestError::Misconfigured),
                (true, Some(_)) => Err(RequestError::TicketRequired),
            };
        };
        let secret = self.secret.as_deref().ok_or(RequestError::Misconfigured)?;
        let ticket = ticket::verify(ticket, secret, now_s).map_err(|error| match error {
            TicketError::Bad => RequestError::BadTicket,
            TicketError::Expired => RequestError::TicketExpired,
        })?;
        if !ticket.rooms.covers(room) {
            return Err(RequestError::WrongRoom);
        }
        Ok(Some(ticket.identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::identity::Role;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn ticket(room: &str, exp: u64) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
        let claims = format!(r#"{{"sub":"u1","name":"Ann","room":"{room}","role":"readonly","exp":{exp}}}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    fn policy(private: &str) -> AccessPolicy {
        let (policy, problem) = AccessPolicy::new(private, Some(SECRET));
        assert_eq!(problem, None);
        policy
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        let patterns = RoomPatterns::parse(" staff , team-* ,");
        assert!(patterns.matches("staff"));
        assert!(!patterns.matches("staffroom"));
        assert!(patterns.matches("team-1"));
        assert!(!patterns.matches("lobby"));
        assert!(RoomPatterns::parse("*").matches("anything"));
        assert!(!RoomPatterns::parse("").matches("lobby"));
    }

    #[test]
    fn public_rooms_take_anonymous_and_ticketed_clients() {
        let policy = policy("staff");
        assert_eq!(policy.admit("lobby", None, NOW), Ok(None));
        let identity = policy.admit("lobby", Some(&ticket("lobby", NOW + 60)), NOW).unwrap().unwrap();
        assert_eq!((identity.id.as_str(), identity.name.as_str(), identity.role), ("u1", "Ann", Role::Readonly));
        assert_eq!(policy.admit("lobby", Some("junk"), NOW), Err(RequestError::BadTicket), "checked when presented");
    }

    #[test]
    fn private_rooms_need_a_ticket_for_that_room() {
        let policy = policy("staff,team-*");
        assert_eq!(policy.admit("staff", None, NOW), Err(RequestError::TicketRequired));
        assert_eq!(policy.admit("team-9", Some("junk"), NOW), Err(RequestError::BadTicket));
        assert_eq!(policy.admit("staff", Some(&ticket("staff", NOW - 3600)), NOW), Err(RequestError::TicketExpired));
        assert_eq!(policy.admit("staff", Some(&ticket("lobby", NOW + 60)), NOW), Err(RequestError::WrongRoom));
        assert!(policy.admit("team-9", Some(&ticket("team-*", NOW + 60)), NOW).unwrap().is_some());
        assert!(policy.admit("staff", Some(&ticket("*", NOW + 60)), NOW).unwrap().is_some());
    }

    #[test]
    fn without_a_trustworthy_secret_private_rooms_fail_closed() {
        for secret in [None, Some(""), Some("too short")] {
            let (policy, problem) = AccessPolicy::new("*", secret);
            assert!(problem.is_some());
            assert_eq!(policy.admit("lobby", None, NOW), Err(RequestError::Misconfigured));
            assert_eq!(policy.admit("lobby", Some(&ticket("lobby", NOW + 60)), NOW), Err(RequestError::Misconfigured));
        }
        let (public, _) = AccessPolicy::new("", None);
        assert_eq!(public.admit("lobby", None, NOW), Ok(None), "no private rooms: no secret needed");
    }
}
