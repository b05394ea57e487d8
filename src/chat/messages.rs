//! The rules of a message's life after it is posted: who may edit it and until when, how
//! reactions toggle and count, which resend is a duplicate, and how often typing is told.
//! The room reads what it needs of the stored history through `History` (the Durable Object
//! answers from SQLite, the tests from memory), decides, and returns a change for the object to
//! store and then broadcast.

use crate::chat::emoji::is_one_emoji;
use crate::chat::identity::Identity;
use crate::chat::protocol::{ChatMessage, Counts, ErrorCode, ServerFrame};

/// `EDIT_WINDOW_S`'s default: an author may edit a message for this long after posting it.
pub const DEFAULT_EDIT_WINDOW_S: u64 = 900;

/// Most distinct emoji on one message.
pub const MAX_DISTINCT_REACTIONS: usize = 20;

/// One `typing` frame per socket per this long is told to the room; more are dropped.
pub const TYPING_EVERY_MS: u64 = 2_000;

/// A `typing` frame means "typing until now + this".
pub const TYPING_FOR_MS: u64 = 6_000;

/// Who sent something, for duplicate sends, authorship and reactions: the ticket identity if
/// any, else the client instance id the upgrade named (`?client=`), else the socket itself.
/// Never sent to anyone.
pub fn sender_key(identity: Option<&Identity>, client_id: Option<&str>, socket: &str) -> String {
    // Concatenated rather than formatted: this runs for every message, and `format!` costs more.
    match (identity, client_id) {
        (Some(user), _) => ["u:", &user.id].concat(),
        (None, Some(client)) => ["c:", client].concat(),
        (None, None) => ["s:", socket].concat(),
    }
}

/// A stored message, as the rules need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub message: ChatMessage,
    /// Its sender key; `None` for messages stored before sender keys existed, which nobody edits.
    pub sender: Option<String>,
    /// Every reaction: (emoji, sender key), in the order they were made.
    pub reactors: Vec<(String, String)>,
}

/// What the room may read of its stored history (the newest ~1,000 messages) to decide. A read
/// that fails is `unavailable`: the room decides nothing it cannot check.
pub trait History {
    /// Message `id`, tombstones included.
    fn message(&self, id: u64) -> Result<Option<Stored>, ErrorCode>;
    /// The message `sender` posted with `cid`, while it is in the window.
    fn by_cid(&self, sender: &str, cid: &str) -> Result<Option<ChatMessage>, ErrorCode>;
}

/// A change to a stored message, decided by the room: store it, then broadcast `frame()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Edit { id: u64, text: String, edited_at: u64, seq: u64 },
    /// A tombstone: the text and the reactions go, the id stays.
    Delete { id: u64, at: u64, seq: u64 },
    /// `sender`'s `emoji` was added (or taken back), leaving `counts`.
    React { id: u64, emoji: String, sender: String, added: bool, counts: Counts, seq: u64 },
}

impl Change {
    pub fn id(&self) -> u64 {
        match self {
            Change::Edit { id, .. } | Change::Delete { id, .. } | Change::React { id, .. } => *id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Change::Edit { seq, .. } | Change::Delete { seq, .. } | Change::React { seq, .. } => *seq,
        }
    }

    /// The frame every socket gets once the change is stored.
    pub fn frame(&self) -> ServerFrame {
        match self.clone() {
            Change::Edit { id, text, edited_at, seq } => ServerFrame::Edited { id, text, edited_at, seq },
            Change::Delete { id, at, seq } => ServerFrame::Deleted { id, at, seq },
            Change::React { id, counts, seq, .. } => ServerFrame::Reactions { id, counts, seq },
        }
    }
}

/// A message that exists and is not deleted.
pub fn live(stored: Option<Stored>) -> Result<Stored, ErrorCode> {
    stored.filter(|stored| !stored.message.deleted).ok_or(ErrorCode::NotFound)
}

/// Whether `sender` may edit `stored` at `now`: only its author, within `window_ms` of posting.
pub fn check_edit(stored: &Stored, sender: &str, now: u64, window_ms: u64) -> Result<(), ErrorCode> {
    if stored.sender.as_deref() != Some(sender) {
        return Err(ErrorCode::Forbidden);
    }
    if now > stored.message.at.saturating_add(window_ms) {
        return Err(ErrorCode::TooLate);
    }
    Ok(())
}

/// Whether `sender` may delete `stored`: only its author, at any time.
pub fn check_delete(stored: &Stored, sender: &str) -> Result<(), ErrorCode> {
    if stored.sender.as_deref() == Some(sender) {
        Ok(())
    } else {
        Err(ErrorCode::Forbidden)
    }
}

/// Toggles `sender`'s `emoji` on `stored`: whether it is now added, and the counts after.
pub fn toggle_reaction(stored: &Stored, sender: &str, emoji: &str) -> Result<(bool, Counts), ErrorCode> {
    if !is_one_emoji(emoji) {
        return Err(ErrorCode::BadEmoji);
    }
    let mut counts = counts(&stored.reactors);
    let had = stored.reactors.iter().any(|(e, s)| e == emoji && s == sender);
    if had {
        counts.take(emoji);
    } else {
        if counts.get(emoji).is_none() && counts.len() >= MAX_DISTINCT_REACTIONS {
            return Err(ErrorCode::BadEmoji);
        }
        counts.add(emoji);
    }
    Ok((!had, counts))
}

/// How many senders chose each emoji.
pub fn counts(reactors: &[(String, String)]) -> Counts {
    let mut counts = Counts::new();
    for (emoji, _) in reactors {
        counts.add(emoji);
    }
    counts
}

/// Whether a `typing` frame at `now` is told, given when this socket's last one was.
pub fn typing_allowed(last: Option<u64>, now: u64) -> bool {
    last.is_none_or(|last| now >= last.saturating_add(TYPING_EVERY_MS))
}

/// A stored history in memory, for the tests: what the Durable Object keeps in SQLite.
#[cfg(test)]
pub mod memory {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct MemoryHistory {
        pub messages: BTreeMap<u64, (Stored, Option<String>)>,
    }

    impl History for MemoryHistory {
        fn message(&self, id: u64) -> Result<Option<Stored>, ErrorCode> {
            Ok(self.messages.get(&id).map(|(stored, _)| stored.clone()))
        }

        fn by_cid(&self, sender: &str, cid: &str) -> Result<Option<ChatMessage>, ErrorCode> {
            let named = |(stored, stored_cid): &&(Stored, Option<String>)| {
                stored.sender.as_deref() == Some(sender) && stored_cid.as_deref() == Some(cid)
            };
            Ok(self.messages.values().find(named).map(|(stored, _)| stored.message.clone()))
        }
    }

    impl MemoryHistory {
        pub fn post(&mut self, message: &ChatMessage, sender: &str, cid: Option<&str>) {
            let uncited = ChatMessage { cid: None, ..message.clone() };
            let stored = Stored { message: uncited, sender: Some(sender.into()), reactors: vec![] };
            self.messages.insert(message.id, (stored, cid.map(str::to_owned)));
        }

        /// Carries out a change as the store does; false when its message is gone.
        pub fn apply(&mut self, change: &Change) -> bool {
            let Some((stored, _)) = self.messages.get_mut(&change.id()) else { return false };
            stored.message.seq = change.seq();
            match change {
                Change::Edit { text, edited_at, .. } => {
                    stored.message.text = text.clone();
                    stored.message.edited_at = Some(*edited_at);
                }
                Change::Delete { .. } => {
                    stored.message.text.clear();
                    stored.message.deleted = true;
                    stored.message.reactions = Counts::new();
                    stored.reactors.clear();
                }
                Change::React { emoji, sender, added, counts, .. } => {
                    if *added {
                        stored.reactors.push((emoji.clone(), sender.clone()));
                    } else {
                        stored.reactors.retain(|(e, s)| !(e == emoji && s == sender));
                    }
                    stored.message.reactions = counts.clone();
                }
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::identity::Role;

    fn stored(at: u64, sender: &str) -> Stored {
        let message = ChatMessage { id: 1, nick: "Ann".into(), text: "hi".into(), at, ..Default::default() };
        Stored { message, sender: Some(sender.into()), reactors: vec![] }
    }

    #[test]
    fn the_sender_key_is_the_identity_else_the_client_else_the_socket() {
        let user = Identity { id: "u1".into(), name: "Ann".into(), role: Role::Member, expires_at: 1 };
        assert_eq!(sender_key(Some(&user), Some("tab"), "s1"), "u:u1");
        assert_eq!(sender_key(None, Some("tab"), "s1"), "c:tab");
        assert_eq!(sender_key(None, None, "s1"), "s:s1");
    }

    #[test]
    fn only_the_author_edits_and_only_within_the_window() {
        let message = stored(10_000, "c:ann");
        assert_eq!(check_edit(&message, "c:ann", 10_000 + 900_000, 900_000), Ok(()));
        assert_eq!(check_edit(&message, "c:ann", 10_000 + 900_001, 900_000), Err(ErrorCode::TooLate));
        assert_eq!(check_edit(&message, "c:bob", 10_001, 900_000), Err(ErrorCode::Forbidden));
        let old = Stored { sender: None, ..message.clone() };
        assert_eq!(check_edit(&old, "c:ann", 10_001, 900_000), Err(ErrorCode::Forbidden), "no author known");
        assert_eq!(check_delete(&message, "c:ann"), Ok(()));
        assert_eq!(check_delete(&message, "s:x"), Err(ErrorCode::Forbidden));
        let tombstone = Stored { message: ChatMessage { deleted: true, ..message.message.clone() }, ..message };
        assert_eq!(live(Some(tombstone)), Err(ErrorCode::NotFound));
        assert_eq!(live(None), Err(ErrorCode::NotFound));
    }

    #[test]
    fn reactions_toggle_count_once_per_sender_and_are_bounded() {
        let mut message = stored(0, "c:ann");
        let (added, counts) = toggle_reaction(&message, "c:bob", "👍").unwrap();
        assert!(added);
        assert_eq!(counts, [("👍".to_owned(), 1)].into_iter().collect());
        message.reactors.push(("👍".into(), "c:bob".into()));
        message.reactors.push(("👍".into(), "c:cat".into()));
        let (added, counts) = toggle_reaction(&message, "c:bob", "👍").unwrap();
        assert!(!added, "the same sender toggles it off");
        assert_eq!(counts.get("👍"), Some(1));
        assert_eq!(toggle_reaction(&message, "c:bob", "no").unwrap_err(), ErrorCode::BadEmoji);
        assert_eq!(toggle_reaction(&message, "c:bob", "👍👍").unwrap_err(), ErrorCode::BadEmoji);
        let emoji: Vec<String> = ('\u{1F600}'..).take(MAX_DISTINCT_REACTIONS).map(String::from).collect();
        message.reactors = emoji.iter().map(|e| (e.clone(), "c:cat".into())).collect();
        assert_eq!(toggle_reaction(&message, "c:bob", "🎉").unwrap_err(), ErrorCode::BadEmoji, "a 21st emoji");
        let (added, counts) = toggle_reaction(&message, "c:bob", &emoji[0]).unwrap();
        assert!(added && counts.get(&emoji[0]) == Some(2), "one of the 20 still takes more senders");
    }

    #[test]
    fn typing_is_told_at_most_every_two_seconds() {
        assert!(typing_allowed(None, 0));
        assert!(!typing_allowed(Some(1_000), 2_999));
        assert!(typing_allowed(Some(1_000), 3_000));
    }
}
