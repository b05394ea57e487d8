//! A busy room stores a burst of posts together. While the outbox waits for its tick (see
//! `outbox`), a post from a socket is held instead of stored at once; the tick stores every held
//! post with one statement, in one commit, and only then sends them, so each is still stored
//! before anyone sees it. Storing costs per statement and per commit far more than per row
//! (BENCHMARKS.md, "Bursts stored together"), so a burst of posts costs little more than one.
//!
//! The room's rules see held posts as stored (`WithHeld`): a resend of one is still a duplicate,
//! and a reply may name one. Anything else that reads or changes the history has the object store
//! the held posts first, so that it sees them in SQLite and its own frames follow theirs.

use crate::chat::messages::{History, Stored};
use crate::chat::outbox::MAX_BATCH_FRAMES;
use crate::chat::protocol::{ChatMessage, ErrorCode};

/// A post decided by the room and not stored yet; `from` is whatever the object needs to answer
/// its sender (its socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPost<T> {
    pub message: ChatMessage,
    /// The sender key (`messages::sender_key`).
    pub sender: String,
    pub cid: Option<String>,
    pub from: T,
}

/// The posts waiting for the tick, oldest first.
#[derive(Debug)]
pub struct Held<T> {
    posts: Vec<HeldPost<T>>,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held { posts: Vec::new() }
    }
}

impl<T> Held<T> {
    /// Holds `post`; true when as many are held as one batch carries, and they should be stored
    /// now rather than at the tick, so that a burst never waits on more than one batch's worth.
    pub fn hold(&mut self, post: HeldPost<T>) -> bool {
        self.posts.push(post);
        self.posts.len() >= MAX_BATCH_FRAMES
    }

    /// Every held post, oldest first, to be stored now.
    pub fn take(&mut self) -> Vec<HeldPost<T>> {
        std::mem::take(&mut self.posts)
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }
}

/// The stored history with the held posts on top.
pub struct WithHeld<'a, T> {
    pub history: &'a dyn History,
    pub held: &'a Held<T>,
}

impl<T> History for WithHeld<'_, T> {
    fn message(&self, id: u64) -> Result<Option<Stored>, ErrorCode> {
        match self.held.posts.iter().find(|post| post.message.id == id) {
            Some(post) => Ok(Some(Stored {
                message: ChatMessage { cid: None, ..post.message.clone() },
                sender: Some(post.sender.clone()),
                reactors: Vec::new(),
            })),
            None => self.history.message(id),
        }
    }

    fn by_cid(&self, sender: &str, cid: &str) -> Result<Option<ChatMessage>, ErrorCode> {
        let held = self.held.posts.iter().find(|post| post.sender == sender && post.cid.as_deref() == Some(cid));
        match held {
            Some(post) => Ok(Some(ChatMessage { cid: None, ..post.message.clone() })),
            None => self.history.by_cid(sender, cid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history of one stored message, 1, posted by "s:a" with cid "c1".
    struct OneStored;

    impl History for OneStored {
        fn message(&self, id: u64) -> Result<Option<Stored>, ErrorCode> {
            Ok((id == 1).then(|| Stored { message: message(1), sender: Some("s:a".into()), reactors: Vec::new() }))
        }

        fn by_cid(&self, sender: &str, cid: &str) -> Result<Option<ChatMessage>, ErrorCode> {
            Ok((sender == "s:a" && cid == "c1").then(|| message(1)))
        }
    }

    fn message(id: u64) -> ChatMessage {
        ChatMessage { id, nick: "ann".into(), text: format!("text {id}"), at: 1_000 + id, seq: id, ..Default::default() }
    }

    fn post(id: u64, sender: &str, cid: Option<&str>) -> HeldPost<()> {
        HeldPost { message: message(id), sender: sender.into(), cid: cid.map(Into::into), from: () }
    }

    #[test]
    fn held_posts_are_taken_oldest_first_and_only_once() {
        let mut held = Held::default();
        assert!(!held.hold(post(2, "s:a", None)));
        assert!(!held.hold(post(3, "s:b", Some("x"))));
        let ids: Vec<u64> = held.take().iter().map(|post| post.message.id).collect();
        assert_eq!(ids, [2, 3]);
        assert!(held.is_empty());
        assert!(held.take().is_empty());
    }

    #[test]
    fn a_full_batch_of_held_posts_asks_to_be_stored_now() {
        let mut held = Held::default();
        for id in 1..MAX_BATCH_FRAMES as u64 {
            assert!(!held.hold(post(id, "s:a", None)), "post {id} of {MAX_BATCH_FRAMES}");
        }
        assert!(held.hold(post(MAX_BATCH_FRAMES as u64, "s:a", None)));
    }

    #[test]
    fn the_rules_see_held_posts_as_stored() {
        let mut held = Held::default();
        held.hold(post(2, "s:a", Some("c2")));
        let history = WithHeld { history: &OneStored, held: &held };
        let two = history.message(2).unwrap().expect("a held post is found by id");
        assert_eq!((two.message.id, two.sender.as_deref()), (2, Some("s:a")));
        assert_eq!(two.message.cid, None, "the cid is never part of a stored message");
        assert_eq!(history.by_cid("s:a", "c2").unwrap().map(|m| m.id), Some(2));
        assert_eq!(history.by_cid("s:b", "c2").unwrap(), None, "another sender's cid is not a duplicate");
        assert_eq!(history.message(1).unwrap().map(|s| s.message.id), Some(1), "stored ones still found");
        assert_eq!(history.by_cid("s:a", "c1").unwrap().map(|m| m.id), Some(1));
        assert_eq!(history.message(3).unwrap(), None);
    }
}
