//! Moderation: what moderators (ticket role `moderator`, over their socket) and the operator
//! (the admin API) may do to a room, and the bans and mutes that follow. The room decides
//! who an action hits; the object stores sanctions, tombstones and the audit trail.
//!
//! Bans and mutes name a person: a ticket identity by its `sub`, an anonymous client by a
//! salted hash of its IP address (the raw address is never kept). They end on their own:
//! each carries its end, checked whenever the room is awake anyway, so no alarm wakes an
//! idle room for them.

use crate::chat::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest ban or mute with an end: ten years, in seconds. Longer is `for good` (no duration).
pub const MAX_DURATION_S: u64 = 10 * 365 * 24 * 3600;
/// Longest slow-mode interval.
pub const MAX_SLOW_S: u64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Delete { id: u64 },
    Kick { nick: String },
    /// `duration_s: None` bans for good.
    Ban { nick: String, duration_s: Option<u64> },
    Unban { nick: String },
    Mute { nick: String, duration_s: u64 },
    /// At most one message per `seconds` per person; 0 turns slow mode off.
    Slow { seconds: u64 },
    Clear,
}

pub const ACTION_NAMES: [&str; 7] = ["delete", "kick", "ban", "unban", "mute", "slow", "clear"];

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Delete { .. } => "delete",
            Action::Kick { .. } => "kick",
            Action::Ban { .. } => "ban",
            Action::Unban { .. } => "unban",
            Action::Mute { .. } => "mute",
            Action::Slow { .. } => "slow",
            Action::Clear => "clear",
        }
    }

    /// Reads the action named by `object[tag]` (`type` in a moderator's frame, `action` in an
    /// admin request): `None` when that names no moderation action, `bad_json` when its
    /// fields are missing or out of range.
    pub fn from_json(object: &Value, tag: &str) -> Option<Result<Action, ErrorCode>> {
        let name = object.get(tag)?.as_str()?;
        if !ACTION_NAMES.contains(&name) {
            return None;
        }
        let nick = || object.get("nick").and_then(Value::as_str).map(str::to_owned).ok_or(ErrorCode::BadJson);
        let number = |field: &str| object.get(field).map(|v| v.as_u64().ok_or(ErrorCode::BadJson)).transpose();
        let duration = || match number("duration")? {
            Some(seconds) if (1..=MAX_DURATION_S).contains(&seconds) => Ok(Some(seconds)),
            Some(_) => Err(ErrorCode::BadJson),
            None => Ok(None),
        };
        let action = (|| {
            Ok(match name {
                "delete" => Action::Delete { id: number("id")?.ok_or(ErrorCode::BadJson)? },
                "kick" => Action::Kick { nick: nick()? },
                "ban" => Action::Ban { nick: nick()?, duration_s: duration()? },
                "unban" => Action::Unban { nick: nick()? },
                "mute" => Action::Mute { nick: nick()?, duration_s: duration()?.ok_or(ErrorCode::BadJson)? },
                "slow" => match number("seconds")? {
                    Some(seconds) if seconds <= MAX_SLOW_S => Action::Slow { seconds },
                    _ => return Err(ErrorCode::BadJson),
                },
                _ => Action::Clear,
            })
        })();
        Some(action)
    }
}

/// Longest body of an admin request.
pub const MAX_ADMIN_BODY_BYTES: usize = 4 * 1024;

/// Reads the body of `POST /chat/ROOM/admin`: `{"action":NAME, ...the frame's fields}`.
pub fn admin_action(body: &str) -> Option<Action> {
    if body.len() > MAX_ADMIN_BODY_BYTES {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    Action::from_json(&value, "action")?.ok()
}

/// Whom a sanction names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A ticket identity, by `sub`.
    User(String),
    /// An anonymous client, by `address_key` of its IP.
    Address(String),
}

impl Target {
    /// Whether this names the person known by `user` (a ticket's `sub`), or when anonymous by
    /// `address` (its address key): compared in place, so a check allocates nothing.
    fn names(&self, user: Option<&str>, address: Option<&str>) -> bool {
        match (self, user) {
            (Target::User(id), Some(user)) => id == user,
            (Target::Address(key), None) => Some(key.as_str()) == address,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SanctionKind {
    Ban,
    Mute,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    pub kind: SanctionKind,
    pub target: Target,
    /// The nick the person had, for the ban list and for `unban`.
    pub nick: String,
    /// When it ends, Unix ms; `None`: for good.
    pub until: Option<u64>,
}

impl Sanction {
    fn in_force(&self, now: u64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// The bans and mutes in force in a room.
#[derive(Debug, Default)]
pub struct Sanctions(Vec<Sanction>);

impl Sanctions {
    pub fn restore(&mut self, sanction: Sanction) {
        self.0.push(sanction);
    }

    /// Whether the person known by `user`, or when anonymous by `address`, is under a `kind`
    /// sanction at `now`. Checked on every post, so it allocates nothing.
    pub fn applies(&self, kind: SanctionKind, user: Option<&str>, address: Option<&str>, now: u64) -> bool {
        self.0.iter().any(|s| s.kind == kind && s.target.names(user, address) && s.in_force(now))
    }

    /// Adds `sanction`, replacing one of the same kind on the same target.
    pub fn impose(&mut self, sanction: Sanction) {
        self.0.retain(|s| !(s.kind == sanction.kind && s.target == sanction.target));
        self.0.push(sanction);
    }

    /// Lifts every ban recorded under `nick` (compared without case), returning them.
    pub fn lift_bans(&mut self, nick_key: &str, now: u64) -> Vec<Sanction> {
        let (lifted, kept) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|s| s.kind == SanctionKind::Ban && s.nick.to_ascii_lowercase() == nick_key && s.in_force(now));
        self.0 = kept;
        lifted
    }

    /// The bans in force, for the operator's list.
    pub fn bans(&self, now: u64) -> Vec<Sanction> {
        self.0.iter().filter(|s| s.kind == SanctionKind::Ban && s.in_force(now)).cloned().collect()
    }
}

/// A salted hash of a client's IP address: enough to recognise the address again, useless
/// to recover it without the room's salt.
pub fn address_key(salt: &[u8], address: &str) -> String {
    let digest = Sha256::new().chain_update(salt).chain_update(address.as_bytes()).finalize();
    digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Option<Result<Action, ErrorCode>> {
        Action::from_json(&value, "type")
    }

    #[test]
    fn actions_are_read_from_frames_and_admin_bodies() {
        assert_eq!(parse(json!({"type": "delete", "id": 7})), Some(Ok(Action::Delete { id: 7 })));
        assert_eq!(parse(json!({"type": "kick", "nick": "Bob"})), Some(Ok(Action::Kick { nick: "Bob".into() })));
        assert_eq!(
            parse(json!({"type": "ban", "nick": "Bob", "duration": 60})),
            Some(Ok(Action::Ban { nick: "Bob".into(), duration_s: Some(60) }))
        );
        assert_eq!(parse(json!({"type": "ban", "nick": "Bob"})), Some(Ok(Action::Ban { nick: "Bob".into(), duration_s: None })));
        assert_eq!(parse(json!({"type": "unban", "nick": "Bob"})), Some(Ok(Action::Unban { nick: "Bob".into() })));
        assert_eq!(
            parse(json!({"type": "mute", "nick": "Bob", "duration": 30})),
            Some(Ok(Action::Mute { nick: "Bob".into(), duration_s: 30 }))
        );
        assert_eq!(parse(json!({"type": "slow", "seconds": 0})), Some(Ok(Action::Slow { seconds: 0 })));
        assert_eq!(parse(json!({"type": "clear"})), Some(Ok(Action::Clear)));
        assert_eq!(Action::from_json(&json!({"action": "clear"}), "action"), Some(Ok(Action::Clear)));
    }

    #[test]
    fn bad_fields_are_bad_json_and_other_types_are_not_actions() {
        for bad in [
            json!({"type": "delete"}),
            json!({"type": "delete", "id": -1}),
            json!({"type": "delete", "id": "7"}),
            json!({"type": "kick"}),
            json!({"type": "ban", "nick": "Bob", "duration": 0}),
            json!({"type": "ban", "nick": "Bob", "duration": MAX_DURATION_S + 1}),
            json!({"type": "mute", "nick": "Bob"}),
            json!({"type": "slow"}),
            json!({"type": "slow", "seconds": MAX_SLOW_S + 1}),
        ] {
            assert_eq!(parse(bad.clone()), Some(Err(ErrorCode::BadJson)), "{bad}");
        }
        assert_eq!(parse(json!({"type": "message", "text": "x"})), None);
        assert_eq!(parse(json!({"type": 5})), None);
        assert_eq!(Action::from_json(&json!({"type": "clear"}), "action"), None);
    }

    #[test]
    fn admin_bodies_name_an_action_or_are_refused() {
        assert_eq!(admin_action(r#"{"action":"kick","nick":"Bob"}"#), Some(Action::Kick { nick: "Bob".into() }));
        for bad in ["", "{", "[]", r#"{"type":"kick","nick":"Bob"}"#, r#"{"action":"kick"}"#, r#"{"action":"explode"}"#] {
            assert_eq!(admin_action(bad), None, "{bad}");
        }
        let padded = format!(r#"{{"action":"clear","pad":"{}"}}"#, "x".repeat(MAX_ADMIN_BODY_BYTES));
        assert_eq!(admin_action(&padded), None);
    }

    #[test]
    fn sanctions_apply_until_they_end_and_replace_each_other() {
        let bob = Target::User("u2".into());
        let mut sanctions = Sanctions::default();
        sanctions.impose(Sanction { kind: SanctionKind::Mute, target: bob.clone(), nick: "Bob".into(), until: Some(1_000) });
        assert!(sanctions.applies(SanctionKind::Mute, Some("u2"), None, 999));
        assert!(!sanctions.applies(SanctionKind::Mute, Some("u2"), None, 1_000), "ends on its own");
        assert!(!sanctions.applies(SanctionKind::Ban, Some("u2"), None, 0));
        sanctions.impose(Sanction { kind: SanctionKind::Mute, target: bob.clone(), nick: "Bob".into(), until: None });
        assert!(sanctions.applies(SanctionKind::Mute, Some("u2"), None, u64::MAX), "replaced by a mute for good");
        sanctions.impose(Sanction { kind: SanctionKind::Ban, target: bob.clone(), nick: "Bob".into(), until: Some(50) });
        assert_eq!(sanctions.bans(10).len(), 1);
        assert!(sanctions.bans(50).is_empty());
        assert_eq!(sanctions.lift_bans("bob", 10).len(), 1);
        assert!(!sanctions.applies(SanctionKind::Ban, Some("u2"), None, 10));
        assert!(sanctions.applies(SanctionKind::Mute, Some("u2"), None, 10), "unban lifts bans only");
    }

    #[test]
    fn address_keys_are_stable_salted_and_not_the_address() {
        let key = address_key(b"salt", "203.0.113.7");
        assert_eq!(key, address_key(b"salt", "203.0.113.7"));
        assert_ne!(key, address_key(b"other", "203.0.113.7"));
        assert_ne!(key, address_key(b"salt", "203.0.113.8"));
        assert_eq!(key.len(), 32);
        assert!(!key.contains("203"));
    }
}
