//! Who a ticketed user is, once the Worker has verified their ticket: what the room needs to
//! reserve their nick, group their sockets into one presence and decide what they may do.

use serde::Serialize;

/// What a ticket lets its holder do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Member,
    Moderator,
    /// Reads and appears in presence, but may not post or rename.
    Readonly,
}

impl Role {
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "member" => Some(Role::Member),
            "moderator" => Some(Role::Moderator),
            "readonly" => Some(Role::Readonly),
            _ => None,
        }
    }

    pub fn may_speak(self) -> bool {
        self != Role::Readonly
    }
}

/// A verified ticket's holder. The ticket itself never travels past the Worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The application's stable user id (`sub`).
    pub id: String,
    /// The nick to show (`name`), already a valid nick.
    pub name: String,
    pub role: Role,
    /// When the ticket expires, in Unix milliseconds.
    pub expires_at: u64,
}
