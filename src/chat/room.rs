//! One chat room's live state: who is in it under which nick, the rate limits of each socket,
//! each client and the room, and the next message id. The room decides; the Durable Object carries out what it decides
//! (store, send, close) and owns nothing but the runtime handles.
//!
//! The room is rebuilt whenever the object wakes from hibernation, from each socket's
//! `Attachment`, so everything a socket needs to survive hibernation is in there. The rate
//! limit is not: an object only hibernates after seconds without any frame, long enough for
//! every bucket to refill, so a fresh full bucket on wake is exactly what it would hold. A
//! client's join count does not survive either; its key does, so that its sockets share one
//! budget again after a wake.

use crate::chat::clients::{ClientKey, Clients};
use crate::chat::close;
use crate::edge::config::{RoomLimits, FLOOD_STRIKES};
use crate::chat::nicknames::{self, validate_nick};
use crate::chat::protocol::{clean_text, parse_client_frame, ChatMessage, ClientFrame, ErrorCode, Incoming, ServerFrame};
use crate::chat::rate_limit::TokenBucket;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub type SocketId = String;

/// What a socket carries through hibernation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: SocketId,
    pub nick: String,
    pub joined: u64,
    #[serde(default)]
    pub client: ClientKey,
    /// Set once the server has closed the socket and announced its leave, so that a socket
    /// still finishing its close handshake is not restored as a member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
}

struct Member {
    nick: String,
    joined: u64,
    client: ClientKey,
    bucket: TokenBucket,
    strikes: u32,
}

impl Member {
    fn attachment(&self, id: &str) -> Attachment {
        Attachment { id: id.to_owned(), nick: self.nick.clone(), joined: self.joined, client: self.client, gone: false }
    }
}

/// What the room decided about a frame, for the Durable Object to carry out.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaction {
    /// The socket is not (or no longer) a member: nothing to do.
    Nothing,
    /// Send this to the sender only.
    Reply(ServerFrame),
    /// Store this message, then broadcast it to every socket, the sender included.
    Post(ChatMessage),
    /// Save the attachment on the sender, then broadcast the frame to every socket.
    Renamed { frame: ServerFrame, attachment: Attachment },
    /// Send `error` to the sender, save the attachment, close it with `code` and `reason`,
    /// and broadcast `left` to everyone else: the sender is no longer a member.
    Kick { error: ServerFrame, attachment: Attachment, code: u16, reason: &'static str, left: ServerFrame },
}

/// Why a socket may not join: the object accepts it, sends `error`, and closes it with `code`
/// and `reason`, announcing nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub error: ServerFrame,
    pub code: u16,
    pub reason: &'static str,
}

/// What joining produced.
#[derive(Debug)]
pub struct Joined {
    pub attachment: Attachment,
    /// Why the requested nick was not given, if one was asked for and refused.
    pub refused_nick: Option<ErrorCode>,
    /// The `joined` frame for every other socket.
    pub announcement: ServerFrame,
}

pub struct Room {
    members: HashMap<SocketId, Member>,
    /// Nick key (see `nicknames::key`) to the socket that holds it.
    owners: HashMap<String, SocketId>,
    clients: Clients,
    /// Messages from everyone together.
    posts: TokenBucket,
    limits: RoomLimits,
    /// False until the stored history's last message is known: until then nothing is posted,
    /// since an id from a guessed start could sort before messages already stored.
    history_known: bool,
    last_id: u64,
    last_at: u64,
}

impl Room {
    /// A room whose stored history ends with message `last_id`, stamped `last_at`.
    pub fn new(limits: RoomLimits, last_id: u64, last_at: u64) -> Self {
        let mut room = Room::awaiting_history(limits);
        room.resume_history(last_id, last_at);
        room
    }

    /// A room whose stored history has not been read yet: see `resume_history`.
    pub fn awaiting_history(limits: RoomLimits) -> Self {
        Room {
            members: HashMap::new(),
            owners: HashMap::new(),
            clients: Clients::default(),
            posts: TokenBucket::full(limits.room, 0),
            limits,
            history_known: false,
            last_id: 0,
            last_at: 0,
        }
    }

    pub fn history_known(&self) -> bool {
        self.history_known
    }

    /// The stored history ends with message `last_id` (0: there is none), stamped `last_at`.
    /// Times never go backwards, also across a deleted history.
    pub fn resume_history(&mut self, last_id: u64, last_at: u64) {
        self.history_known = true;
        self.last_id = last_id;
        self.last_at = self.last_at.max(last_at);
    }

    /// Whether one more socket would be too many, given the `open_sockets` the runtime holds
    /// (members and sockets still closing).
    pub fn is_full(&self, open_sockets: usize) -> bool {
        open_sockets.max(self.members.len()) >= self.limits.max_sockets
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Counts a join attempt of `client`, and refuses it when the client joins too often.
    pub fn admit(&mut self, client: ClientKey, now: u64) -> Result<(), Refusal> {
        if self.clients.try_join(client, &self.limits, now) {
            return Ok(());
        }
        Err(Refusal {
            error: ServerFrame::error(ErrorCode::RateLimited),
            code: close::TRY_LATER,
            reason: "Too many joins: wait a few seconds before reconnecting.",
        })
    }

    /// Every nick in the room, sorted without regard to case.
    pub fn nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.members.values().map(|m| m.nick.clone()).collect();
        nicks.sort_by_cached_key(|n| nicknames::key(n));
        nicks
    }

    /// Takes back a socket that was a member before the object hibernated. Returns false for
    /// one the server had already closed.
    pub fn restore(&mut self, attachment: Attachment, now: u64) -> bool {
        if attachment.gone {
            return false;
        }
        self.insert(attachment.id, attachment.nick, attachment.joined, attachment.client, now);
        true
    }

    /// Adds a new socket of `client` (admitted first) under the nick it asked for, or a random
    /// one when it asked for none or for one that is invalid or taken. `entropy` feeds the
    /// random nicks.
    pub fn join(
        &mut self,
        id: SocketId,
        client: ClientKey,
        requested: Option<&str>,
        now: u64,
        entropy: impl FnMut() -> u64,
    ) -> Joined {
        let wanted = requested.map(|nick| validate_nick(nick).and_then(|nick| self.available(nick, None)));
        let (nick, refused_nick) = match wanted {
            Some(Ok(nick)) => (nick.to_owned(), None),
            Some(Err(code)) => (self.random_nick(entropy), Some(code)),
            None => (self.random_nick(entropy), None),
        };
        let member = self.insert(id.clone(), nick.clone(), now, client, now);
        let attachment = member.attachment(&id);
        Joined { attachment, refused_nick, announcement: ServerFrame::Joined { nick, at: now } }
    }

    /// Handles one frame from socket `id`. Every frame counts against its socket's and its
    /// client's budget; only the socket's own one earns strikes, so that a client is never cut
    /// off for what the other sockets behind its address sent.
    pub fn receive(&mut self, id: &str, frame: Incoming<'_>, now: u64) -> Reaction {
        let rate = self.limits.rate;
        let Some(member) = self.members.get_mut(id) else { return Reaction::Nothing };
        if !member.bucket.try_take(rate, now) {
            member.strikes += 1;
            if member.strikes >= FLOOD_STRIKES {
                return self.kick_flooder(id, now);
            }
            return Reaction::Reply(ServerFrame::error(ErrorCode::RateLimited));
        }
        member.strikes = 0;
        if !self.clients.try_frame(member.client, self.limits.client, now) {
            return Reaction::Reply(ServerFrame::error(ErrorCode::RateLimited));
        }
        let outcome = match parse_client_frame(frame) {
            Ok(ClientFrame::Message { text }) => self.post(id, &text, now),
            Ok(ClientFrame::Nick { nick }) => self.rename(id, &nick, now),
            Err(code) => Err(code),
        };
        outcome.unwrap_or_else(|code| Reaction::Reply(ServerFrame::error(code)))
    }

    /// Removes socket `id`, returning the `left` frame for the others, or `None` when it was
    /// not a member (already left, or kicked).
    pub fn leave(&mut self, id: &str, now: u64) -> Option<ServerFrame> {
        let member = self.members.remove(id)?;
        self.owners.remove(&nicknames::key(&member.nick));
        self.clients.remove_socket(member.client);
        Some(ServerFrame::Left { nick: member.nick, at: now })
    }

    fn post(&mut self, id: &str, text: &str, now: u64) -> Result<Reaction, ErrorCode> {
        let text = clean_text(text)?;
        if !self.history_known {
            return Err(ErrorCode::Unavailable);
        }
        if !self.posts.try_take(self.limits.room, now) {
            return Err(ErrorCode::RateLimited);
        }
        self.last_id += 1;
        self.last_at = self.last_at.max(now);
        Ok(Reaction::Post(ChatMessage { id: self.last_id, nick: self.members[id].nick.clone(), text, at: self.last_at }))
    }

    fn rename(&mut self, id: &str, wanted: &str, now: u64) -> Result<Reaction, ErrorCode> {
        let wanted = validate_nick(wanted)?;
        let current = self.members[id].nick.clone();
        if wanted == current {
            return Ok(Reaction::Nothing);
        }
        let wanted = self.available(wanted, Some(id))?.to_owned();
        self.owners.remove(&nicknames::key(&current));
        self.owners.insert(nicknames::key(&wanted), id.to_owned());
        let member = self.members.get_mut(id).expect("renaming a member");
        member.nick = wanted.clone();
        let attachment = member.attachment(id);
        Ok(Reaction::Renamed { frame: ServerFrame::Renamed { from: current, to: wanted, at: now }, attachment })
    }

    fn kick_flooder(&mut self, id: &str, now: u64) -> Reaction {
        let attachment = Attachment { gone: true, ..self.members[id].attachment(id) };
        let left = self.leave(id, now).expect("kicking a member");
        Reaction::Kick {
            error: ServerFrame::error(ErrorCode::RateLimited),
            attachment,
            code: close::POLICY_VIOLATION,
            reason: "Closed for flooding: too many messages after repeated rate_limited errors.",
            left,
        }
    }

    /// `nick` if nobody but `holder` has it.
    fn available<'n>(&self, nick: &'n str, holder: Option<&str>) -> Result<&'n str, ErrorCode> {
        match self.owners.get(&nicknames::key(nick)) {
            Some(owner) if Some(owner.as_str()) != holder => Err(ErrorCode::NickTaken),
            _ => Ok(nick),
        }
    }

    fn random_nick(&self, entropy: impl FnMut() -> u64) -> String {
        nicknames::unused_random_nick(entropy, |nick| self.owners.contains_key(&nicknames::key(nick)))
    }

    fn insert(&mut self, id: SocketId, nick: String, joined: u64, client: ClientKey, now: u64) -> &Member {
        self.owners.insert(nicknames::key(&nick), id.clone());
        self.clients.add_socket(client, self.limits.client, now);
        let member = Member { nick, joined, client, bucket: TokenBucket::full(self.limits.rate, now), strikes: 0 };
        self.members.entry(id).insert_entry(member).into_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::rate_limit::RateLimit;

    fn room() -> Room {
        Room::new(RoomLimits::default(), 0, 0)
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut state = 0u64;
        move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            state
        }
    }

    /// Joins socket `id` as a client of its own.
    fn join(room: &mut Room, id: &str, nick: Option<&str>) -> Joined {
        room.join(id.into(), ClientKey::of(id, [0, 0]), nick, 1_000, counter())
    }

    fn posted(reaction: &Reaction) -> bool {
        matches!(reaction, Reaction::Post(_))
    }

    fn say(room: &mut Room, id: &str, text: &str, now: u64) -> Reaction {
        room.receive(id, Incoming::Text(text), now)
    }

    fn error_code(reaction: &Reaction) -> Option<ErrorCode> {
        match reaction {
            Reaction::Reply(ServerFrame::Error { code, .. }) => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn join_gives_the_requested_nick_or_a_random_one() {
        let mut room = room();
        let ann = join(&mut room, "s1", Some("Ann"));
        assert_eq!(ann.attachment.nick, "Ann");
        assert_eq!(ann.refused_nick, None);
        assert_eq!(ann.announcement, ServerFrame::Joined { nick: "Ann".into(), at: 1_000 });

        let taken = join(&mut room, "s2", Some("aNN"));
        assert_eq!(taken.refused_nick, Some(ErrorCode::NickTaken));
        assert_ne!(nicknames::key(&taken.attachment.nick), "ann");

        let invalid = join(&mut room, "s3", Some("no spaces"));
        assert_eq!(invalid.refused_nick, Some(ErrorCode::BadNick));
        assert!(validate_nick(&invalid.attachment.nick).is_ok());

        let none = join(&mut room, "s4", None);
        assert_eq!(none.refused_nick, None);
        assert_eq!(room.nicks().len(), 4);
    }

    #[test]
    fn random_nicks_are_unique_in_a_full_room() {
        let mut room = room();
        for i in 0..1000 {
            join(&mut room, &format!("s{i}"), None);
        }
        let mut keys: Vec<String> = room.nicks().iter().map(|n| nicknames::key(n)).collect();
        keys.dedup();
        assert_eq!(keys.len(), 1000);
        assert!(room.is_full(0));
    }

    #[test]
    fn users_are_listed_sorted_without_case() {
        let mut room = room();
        join(&mut room, "s1", Some("bob"));
        join(&mut room, "s2", Some("Alice"));
        join(&mut room, "s3", Some("carol"));
        assert_eq!(room.nicks(), ["Alice", "bob", "carol"]);
    }

    #[test]
    fn messages_get_growing_ids_monotonic_times_and_the_sender_nick() {
        let mut room: Room = Room::new(RoomLimits::default(), 41, 5_000);
        join(&mut room, "s1", Some("Ann"));
        let first = say(&mut room, "s1", r#"{"type":"message","text":"  hi  ","nick":"Mallory"}"#, 4_000);
        assert_eq!(first, Reaction::Post(ChatMessage { id: 42, nick: "Ann".into(), text: "hi".into(), at: 5_000 }));
        let second = say(&mut room, "s1", "plain text", 6_000);
        assert_eq!(second, Reaction::Post(ChatMessage { id: 43, nick: "Ann".into(), text: "plain text".into(), at: 6_000 }));
    }

    #[test]
    fn refused_messages_consume_no_id() {
        let mut room = room();
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "   ", 1)), Some(ErrorCode::Empty));
        assert_eq!(error_code(&say(&mut room, "s1", &"x".repeat(2001), 1)), Some(ErrorCode::TooLong));
        assert_eq!(error_code(&say(&mut room, "s1", "{oops", 1)), Some(ErrorCode::BadJson));
        assert_eq!(error_code(&say(&mut room, "s1", r#"{"type":"dance"}"#, 1)), Some(ErrorCode::BadType));
        assert_eq!(error_code(&room.receive("s1", Incoming::Binary, 1)), Some(ErrorCode::Unsupported));
        match say(&mut room, "s1", "ok", 1) {
            Reaction::Post(message) => assert_eq!(message.id, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn renames_check_validity_and_uniqueness() {
        let mut room = room();
        join(&mut room, "s1", Some("Ann"));
        join(&mut room, "s2", Some("Bob"));
        let nick = |n: &str| format!(r#"{{"type":"nick","nick":"{n}"}}"#);
        assert_eq!(error_code(&say(&mut room, "s2", &nick("ANN"), 1)), Some(ErrorCode::NickTaken));
        assert_eq!(error_code(&say(&mut room, "s2", &nick("b b"), 1)), Some(ErrorCode::BadNick));
        assert_eq!(say(&mut room, "s2", &nick("Bob"), 1), Reaction::Nothing);
        match say(&mut room, "s2", &nick("BOB"), 7) {
            Reaction::Renamed { frame, attachment } => {
                assert_eq!(frame, ServerFrame::Renamed { from: "Bob".into(), to: "BOB".into(), at: 7 });
                assert_eq!(attachment.nick, "BOB");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(say(&mut room, "s1", &nick("Bobby"), 8), Reaction::Renamed { .. }));
        // The old nick is free again.
        assert!(matches!(say(&mut room, "s2", &nick("Ann"), 9), Reaction::Renamed { .. }));
        assert_eq!(room.nicks(), ["Ann", "Bobby"]);
    }

    #[test]
    fn leaving_frees_the_nick_and_happens_once() {
        let mut room = room();
        join(&mut room, "s1", Some("Ann"));
        join(&mut room, "s2", Some("Bob"));
        assert_eq!(room.leave("s1", 9), Some(ServerFrame::Left { nick: "Ann".into(), at: 9 }));
        assert_eq!(room.leave("s1", 10), None);
        assert_eq!(room.nicks(), ["Bob"]);
        assert_eq!(join(&mut room, "s3", Some("ann")).refused_nick, None);
        assert_eq!(say(&mut room, "s1", "ghost", 11), Reaction::Nothing);
    }

    #[test]
    fn rate_limit_burst_then_steady_then_kick() {
        let mut room = room();
        join(&mut room, "s1", Some("Ann"));
        join(&mut room, "s2", Some("Bob"));
        for _ in 0..20 {
            assert!(matches!(say(&mut room, "s1", "spam", 1_000), Reaction::Post(_)));
        }
        assert_eq!(error_code(&say(&mut room, "s1", "spam", 1_000)), Some(ErrorCode::RateLimited));
        // Others are unaffected.
        assert!(matches!(say(&mut room, "s2", "hello", 1_000), Reaction::Post(_)));
        // A token comes back every 200 ms, and a passing frame forgives earlier strikes.
        assert!(matches!(say(&mut room, "s1", "later", 1_200), Reaction::Post(_)));
        for _ in 0..FLOOD_STRIKES - 1 {
            assert_eq!(error_code(&say(&mut room, "s1", "spam", 1_200)), Some(ErrorCode::RateLimited));
        }
        match say(&mut room, "s1", "spam", 1_200) {
            Reaction::Kick { error, attachment, code, reason, left } => {
                assert_eq!(error, ServerFrame::error(ErrorCode::RateLimited));
                assert!(attachment.gone);
                assert_eq!(code, 1008);
                assert!(reason.len() <= crate::chat::close::MAX_REASON_BYTES);
                assert_eq!(left, ServerFrame::Left { nick: "Ann".into(), at: 1_200 });
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(room.nicks(), ["Bob"]);
        assert_eq!(room.leave("s1", 1_300), None, "a kicked socket's close announces nothing more");
    }

    #[test]
    fn rate_limit_counts_every_frame_and_is_configurable() {
        let limits = RoomLimits { rate: RateLimit { burst: 2, per_second: 1 }, ..RoomLimits::default() };
        let mut room: Room = Room::new(limits, 0, 0);
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "", 0)), Some(ErrorCode::Empty));
        assert!(matches!(say(&mut room, "s1", "one", 0), Reaction::Post(_)));
        assert_eq!(error_code(&say(&mut room, "s1", "two", 0)), Some(ErrorCode::RateLimited));
    }

    #[test]
    fn restore_rebuilds_members_but_not_kicked_sockets() {
        let mut before = room();
        let ann = join(&mut before, "s1", Some("Ann")).attachment;
        let bob = join(&mut before, "s2", Some("Bob")).attachment;
        let mut after: Room = Room::new(RoomLimits::default(), 5, 0);
        assert!(after.restore(ann, 50_000));
        assert!(!after.restore(Attachment { gone: true, ..bob }, 50_000));
        assert_eq!(after.nicks(), ["Ann"]);
        assert_eq!(join(&mut after, "s3", Some("ann")).refused_nick, Some(ErrorCode::NickTaken));
        assert!(matches!(say(&mut after, "s1", "back", 50_001), Reaction::Post(ChatMessage { id: 6, .. })));
    }

    #[test]
    fn attachments_round_trip_and_stay_small() {
        let client = ClientKey::of("192.0.2.1", [7, 7]);
        let attachment = Attachment { id: "abc".into(), nick: "Ann".into(), joined: 5, client, gone: false };
        let json = serde_json::to_string(&attachment).unwrap();
        assert!(json.starts_with(r#"{"id":"abc","nick":"Ann","joined":5,"client":"#), "{json}");
        assert!(!json.contains("192.0.2.1"), "the address itself is never kept");
        assert_eq!(serde_json::from_str::<Attachment>(&json).unwrap(), attachment);
        let older = serde_json::from_str::<Attachment>(r#"{"id":"abc","nick":"Ann","joined":5}"#).unwrap();
        assert_eq!(older.client, ClientKey::default(), "attachments from before client keys still load");
    }

    #[test]
    fn a_client_shares_one_budget_across_its_sockets_and_reconnects() {
        let limits = RoomLimits { room: RateLimit { burst: 1_000, per_second: 1_000 }, ..RoomLimits::default() };
        let mut room = Room::new(limits, 0, 0);
        let client = ClientKey::of("198.51.100.9", [1, 1]);
        let mut posts = 0;
        for socket in 0..5 {
            let id = format!("s{socket}");
            room.join(id.clone(), client, None, 0, counter());
            posts += (0..20).filter(|_| posted(&say(&mut room, &id, "spam", 0))).count();
            room.leave(&id, 0);
        }
        assert_eq!(posts, 60, "CLIENT_BURST, however many sockets it opens");
        join(&mut room, "other", None);
        assert!(posted(&say(&mut room, "other", "another client is not affected", 0)));
        room.join("again".into(), client, None, 1_000, counter());
        assert_eq!((0..20).filter(|_| posted(&say(&mut room, "again", "spam", 1_000))).count(), 15, "15 per second");
    }

    #[test]
    fn the_client_budget_earns_no_strikes() {
        let mut room = room();
        let client = ClientKey::of("198.51.100.9", [1, 1]);
        for socket in 0..3 {
            room.join(format!("s{socket}"), client, None, 0, counter());
            for _ in 0..20 {
                say(&mut room, &format!("s{socket}"), "spam", 0);
            }
        }
        room.join("calm".into(), client, Some("Calm"), 0, counter());
        for _ in 0..FLOOD_STRIKES + 5 {
            assert_eq!(error_code(&say(&mut room, "calm", "hello?", 0)), Some(ErrorCode::RateLimited));
        }
        assert!(room.nicks().contains(&"Calm".to_owned()), "not kicked for its neighbours' flood");
    }

    #[test]
    fn the_room_takes_at_most_its_messages_per_second_from_everyone() {
        let mut room = room();
        for i in 0..10 {
            join(&mut room, &format!("s{i}"), None);
        }
        let now = 5_000;
        let posts = (0..10).flat_map(|i| (0..10).map(move |_| i)).filter(|i| posted(&say(&mut room, &format!("s{i}"), "x", now))).count();
        assert_eq!(posts, 50);
        assert_eq!(error_code(&say(&mut room, "s0", "x", now)), Some(ErrorCode::RateLimited));
        assert!(posted(&say(&mut room, "s1", "x", now + 20)), "one more every 20 ms");
    }

    #[test]
    fn joining_too_often_is_refused_with_4429() {
        let mut room = room();
        let client = ClientKey::of("203.0.113.1", [0, 0]);
        for _ in 0..10 {
            assert_eq!(room.admit(client, 0), Ok(()));
        }
        let refusal = room.admit(client, 0).unwrap_err();
        assert_eq!(refusal.error, ServerFrame::error(ErrorCode::RateLimited));
        assert_eq!(refusal.code, 4429);
        assert!(refusal.reason.len() <= crate::chat::close::MAX_REASON_BYTES);
        assert_eq!(room.admit(ClientKey::of("203.0.113.2", [0, 0]), 0), Ok(()), "others still join");
        assert_eq!(room.admit(client, 20_000), Ok(()));
    }

    #[test]
    fn nothing_is_posted_until_the_stored_history_is_known() {
        let mut room = Room::awaiting_history(RoomLimits::default());
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "hello", 1)), Some(ErrorCode::Unavailable));
        room.resume_history(500, 7);
        match say(&mut room, "s1", "hello", 1) {
            Reaction::Post(message) => assert_eq!((message.id, message.at), (501, 7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fullness_counts_sockets_still_closing() {
        let limits = RoomLimits { max_sockets: 2, ..RoomLimits::default() };
        let mut room = Room::new(limits, 0, 0);
        join(&mut room, "s1", None);
        assert!(!room.is_full(1));
        assert!(room.is_full(2), "one member and one socket still closing");
        join(&mut room, "s2", None);
        assert!(room.is_full(0));
    }

    #[test]
    fn bad_text_is_refused_and_consumes_no_id() {
        let mut room = room();
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "bell\u{7}", 1)), Some(ErrorCode::BadText));
        match say(&mut room, "s1", "line\r\nbreak", 1) {
            Reaction::Post(message) => assert_eq!((message.id, message.text.as_str()), (1, "line\nbreak")),
            other => panic!("{other:?}"),
        }
    }
}
