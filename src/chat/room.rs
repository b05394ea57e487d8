//! One chat room's live state: who is in it under which nick, the rate limits of each socket,
//! each client and the room, and the next message id. The room decides; the Durable Object carries out what it decides
//! (store, send, close) and owns nothing but the runtime handles.
//!
//! Presence is per person: an anonymous socket is one person, while every socket of one
//! ticket identity (several tabs) shares one nick, one entry in the users list, one `joined`
//! on its first socket and one `left` on its last. A ticket's nick is reserved for its
//! identity in the room (the object stores reservations), so nobody else can take it.
//!
//! The room is rebuilt whenever the object wakes from hibernation, from each socket's
//! `Attachment`, so everything a socket needs to survive hibernation is in there. The rate
//! limit is not: an object only hibernates after seconds without any frame, long enough for
//! every bucket to refill, so a fresh full bucket on wake is exactly what it would hold. A
//! client's join count does not survive either; its key does, so that its sockets share one
//! budget again after a wake.

use crate::chat::clients::{ClientKey, Clients};
use crate::chat::close;
use crate::chat::identity::{Identity, Role};
use crate::chat::messages::{
    check_delete, check_edit, live, sender_key, toggle_reaction, typing_allowed, Change, History, TYPING_FOR_MS,
};
use crate::chat::moderation::{Action, Sanction, SanctionKind, Sanctions, Target};
use crate::chat::flood::{FloodGuard, Verdict};
use crate::edge::config::RoomLimits;
use crate::chat::nicknames::{self, validate_nick, MAX_NICK_CHARS};
use crate::chat::protocol::{
    clean_text, parse_client_frame, ChatMessage, ClientFrame, ErrorCode, Incoming, ServerFrame, You,
};
use crate::chat::rate_limit::TokenBucket;
use std::collections::HashMap;

pub type SocketId = String;

/// What a frame led to, or why it was refused.
type Outcome = Result<Reaction, ErrorCode>;

/// What a socket carries through hibernation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: SocketId,
    pub nick: String,
    pub joined: u64,
    pub client: ClientKey,
    pub identity: Option<Identity>,
    /// `moderation::address_key` of the client's IP, so that an anonymous client can be banned.
    pub address: Option<String>,
    /// The client instance id the upgrade named (`?client=`): the sender key of an anonymous socket.
    pub client_id: Option<String>,
    /// Set once the server has closed the socket and announced its leave, so that a socket
    /// still finishing its close handshake is not restored as a member.
    pub gone: bool,
}

struct Member {
    nick: String,
    joined: u64,
    client: ClientKey,
    flood: FloodGuard,
    identity: Option<Identity>,
    address: Option<String>,
    client_id: Option<String>,
    /// When this socket's last `typing` was told to the room.
    last_typing: Option<u64>,
}

impl Member {
    fn attachment(&self, id: &str) -> Attachment {
        Attachment {
            id: id.to_owned(),
            nick: self.nick.clone(),
            joined: self.joined,
            client: self.client,
            identity: self.identity.clone(),
            address: self.address.clone(),
            client_id: self.client_id.clone(),
            gone: false,
        }
    }

    fn sender_key(&self, id: &str) -> String {
        sender_key(self.identity.as_ref(), self.client_id.as_deref(), id)
    }

    fn role(&self) -> Role {
        self.identity.as_ref().map_or(Role::Member, |user| user.role)
    }

    /// Whom a ban or mute of this member names: its identity, else its address.
    fn target(&self) -> Option<Target> {
        match (&self.identity, &self.address) {
            (Some(user), _) => Some(Target::User(user.id.clone())),
            (None, Some(address)) => Some(Target::Address(address.clone())),
            (None, None) => None,
        }
    }
}

/// Who holds a nick: one anonymous socket, or a ticket identity with all its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Socket(SocketId),
    User(String),
}

impl Holder {
    fn of(id: &str, identity: Option<&Identity>) -> Holder {
        identity.map_or_else(|| Holder::Socket(id.to_owned()), |user| Holder::User(user.id.clone()))
    }
}

struct Owner {
    nick: String,
    holder: Holder,
}

/// A ticket identity present in the room.
struct Presence {
    nick: String,
    sockets: u32,
}

/// A nick newly reserved for a ticket identity, for the object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub nick_key: String,
    pub user: String,
}

/// What the room decided about a frame, for the Durable Object to carry out.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaction {
    /// The socket is not (or no longer) a member: nothing to do.
    Nothing,
    /// Send this to the sender only.
    Reply(ServerFrame),
    /// Store this message with its `sender` key and `cid`, then broadcast it to every socket;
    /// the sender's own copy carries its `cid`.
    Post { message: ChatMessage, sender: String, cid: Option<String> },
    /// A message sent again with a `cid` already stored: send the sender the stored message
    /// (with its `cid`) again. Nothing is stored or broadcast.
    Resend(ChatMessage),
    /// Store the change to a message, then broadcast its frame to every socket.
    Change(Change),
    /// Send this `typing` frame to every socket but the sender's.
    Typing(ServerFrame),
    /// Save the attachment on the sender, then broadcast the frame to every socket.
    Renamed { frame: ServerFrame, attachment: Attachment },
    /// Carry out a moderator's action (see `Moderation`).
    Moderate(Moderation),
    /// Send `error` to the sender, save the attachment, close it with `code` and `reason`,
    /// and broadcast `left` (if any: the person may have other sockets) to everyone else:
    /// the sender is no longer a member.
    Kick { error: ServerFrame, attachment: Attachment, code: u16, reason: &'static str, left: Option<ServerFrame> },
}

/// A moderation action the room has decided on, for the object to carry out: store what
/// changed (`imposed`, `lifted`, a tombstone for `Delete`, the history for `Clear`, the
/// interval for `Slow`), close the `ejected` sockets with `close`, broadcast `left` and a
/// `moderated` notice, and append to the audit trail.
#[derive(Debug, PartialEq, Eq)]
pub struct Moderation {
    pub action: Action,
    /// Who acted: a moderator's nick, or `admin`.
    pub by: String,
    /// The nick acted on, if the action names one.
    pub target: Option<String>,
    pub ejected: Vec<Attachment>,
    pub close: (u16, &'static str),
    pub left: Option<ServerFrame>,
    pub imposed: Option<Sanction>,
    pub lifted: Vec<Sanction>,
    /// The tombstone a `Delete` makes.
    pub deleted: Option<Change>,
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
    /// The `joined` frame for every other socket; `None` when the person was already here
    /// through another socket.
    pub announcement: Option<ServerFrame>,
    pub you: You,
    pub reservation: Option<Reservation>,
}

const TICKET_EXPIRED_REASON: &str = "Your ticket expired: reconnect with a fresh one.";
const KICKED_REASON: &str = "You were removed from this room by a moderator.";
const BANNED_REASON: &str = "You are banned from this room.";
const FLOODING_REASON: &str = "Closed for flooding: still too many messages after seconds of rate_limited errors.";

pub struct Room {
    members: HashMap<SocketId, Member>,
    /// Nick key (see `nicknames::key`) to whoever holds it now: one entry per person present.
    owners: HashMap<String, Owner>,
    /// Ticket identities present, by `sub`.
    users: HashMap<String, Presence>,
    /// Nick keys reserved for ticket identities (`sub`), also while they are away.
    reserved: HashMap<String, String>,
    sanctions: Sanctions,
    /// Slow mode's interval in ms (0: off), and when each person (see `person_key`) last posted.
    slow_ms: u64,
    last_posts: HashMap<String, u64>,
    clients: Clients,
    /// Messages from everyone together.
    posts: TokenBucket,
    limits: RoomLimits,
    /// False until the stored history's last message is known: until then nothing is posted,
    /// since an id from a guessed start could sort before messages already stored.
    history_known: bool,
    last_id: u64,
    last_at: u64,
    /// The room's sequence number of the latest change to its history.
    last_seq: u64,
}

impl Room {
    /// A room whose stored history ends with message `last_id`, stamped `last_at`.
    pub fn new(limits: RoomLimits, last_id: u64, last_at: u64) -> Self {
        let mut room = Room::awaiting_history(limits);
        room.resume_history(last_id, last_at, 0);
        room
    }

    /// A room whose stored history has not been read yet: see `resume_history`.
    pub fn awaiting_history(limits: RoomLimits) -> Self {
        Room {
            members: HashMap::new(),
            owners: HashMap::new(),
            users: HashMap::new(),
            reserved: HashMap::new(),
            sanctions: Sanctions::default(),
            slow_ms: 0,
            last_posts: HashMap::new(),
            clients: Clients::default(),
            posts: TokenBucket::full(limits.room, 0),
            limits,
            history_known: false,
            last_id: 0,
            last_at: 0,
            last_seq: 0,
        }
    }

    pub fn history_known(&self) -> bool {
        self.history_known
    }

    /// The stored history ends with message `last_id` (0: there is none), stamped `last_at`,
    /// and its latest change was `last_seq`. Times never go backwards, also across a deleted history.
    pub fn resume_history(&mut self, last_id: u64, last_at: u64, last_seq: u64) {
        self.history_known = true;
        self.last_id = last_id;
        self.last_at = self.last_at.max(last_at);
        self.last_seq = last_seq;
    }

    /// Takes back a stored ban or mute.
    pub fn restore_sanction(&mut self, sanction: Sanction) {
        self.sanctions.restore(sanction);
    }

    /// Takes back the stored slow-mode interval.
    pub fn restore_slow_mode(&mut self, seconds: u64) {
        self.slow_ms = seconds.saturating_mul(1000);
    }

    pub fn limits(&self) -> &RoomLimits {
        &self.limits
    }

    /// The newest message's id and time.
    pub fn last_message(&self) -> (u64, u64) {
        (self.last_id, self.last_at)
    }

    /// The sequence number of the latest change to the history (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The bans in force, for the operator.
    pub fn bans(&self, now: u64) -> Vec<Sanction> {
        self.sanctions.bans(now)
    }

    /// Decides whether a newcomer may join, counting the attempt against its client's joins:
    /// not while banned (by identity, else by address), not while its client has
    /// `max_client_sockets` open here, and not when the client joins too often.
    pub fn admit(
        &mut self,
        client: ClientKey,
        identity: Option<&Identity>,
        address: Option<&str>,
        now: u64,
    ) -> Result<(), Refusal> {
        if self.sanctions.applies(SanctionKind::Ban, identity.map(|user| user.id.as_str()), address, now) {
            return Err(Refusal { error: ServerFrame::error(ErrorCode::Banned), code: close::FORBIDDEN, reason: BANNED_REASON });
        }
        if self.clients.sockets(client) >= self.limits.max_client_sockets {
            return Err(Refusal {
                error: ServerFrame::error(ErrorCode::TooManyConnections),
                code: close::TRY_LATER,
                reason: "Too many connections from your address to this room.",
            });
        }
        if !self.clients.try_join(client, &self.limits, now) {
            return Err(Refusal {
                error: ServerFrame::error(ErrorCode::RateLimited),
                code: close::TRY_LATER,
                reason: "Too many joins: wait a few seconds before reconnecting.",
            });
        }
        Ok(())
    }

    /// Takes back a stored reservation of a nick for a ticket identity.
    pub fn restore_reservation(&mut self, reservation: Reservation) {
        self.reserved.insert(reservation.nick_key, reservation.user);
    }

    /// Whether one more socket would be too many, given the `open_sockets` the runtime holds
    /// (members and sockets still closing).
    pub fn is_full(&self, open_sockets: usize) -> bool {
        open_sockets.max(self.members.len()) >= self.limits.max_sockets
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// What socket `id` carries through hibernation now; `None` if it is not a member.
    pub fn attachment(&self, id: &str) -> Option<Attachment> {
        self.members.get(id).map(|member| member.attachment(id))
    }

    /// Every person's nick in the room, sorted without regard to case.
    pub fn nicks(&self) -> Vec<String> {
        // In the order of their keys (each nick's `nicknames::key`), through serde_json's map: a
        // `BTreeMap` the WASM module has anyway, where a sort of its own cost 1.5 KB gzipped. (It
        // would keep insertion order under serde_json's `preserve_order`, which nothing here enables.)
        let mut by_key = serde_json::Map::new();
        for (key, owner) in &self.owners {
            by_key.insert(key.clone(), serde_json::Value::String(owner.nick.clone()));
        }
        let nick = |(_, nick)| match nick {
            serde_json::Value::String(nick) => Some(nick),
            _ => None,
        };
        by_key.into_iter().filter_map(nick).collect()
    }

    /// Who a member is, as a welcome tells it; `None` for a socket that is not a member.
    pub fn you(&self, id: &str) -> Option<You> {
        let member = self.members.get(id)?;
        Some(You { nick: member.nick.clone(), id: member.identity.as_ref().map(|u| u.id.clone()), role: member.role() })
    }

    /// Takes back a socket that was a member before the object hibernated. Returns false for
    /// one the server had already closed.
    pub fn restore(&mut self, attachment: Attachment, now: u64) -> bool {
        if attachment.gone {
            return false;
        }
        let Attachment { id, nick, joined, client, identity, address, client_id, .. } = attachment;
        self.insert(id, nick, joined, client, now, identity, address, client_id);
        true
    }

    /// Adds a new socket of `client` (admitted first). A ticket identity gets its ticket's name (or, when another person
    /// holds or reserved it, the first free `name-2`, `name-3`...), or the nick it already has
    /// here through another socket. An anonymous socket gets the nick it asked for, or a
    /// random one when it asked for none or for one that is invalid or taken. `client_id` is
    /// the upgrade's `?client=`, already checked. `entropy` feeds the random nicks.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        id: SocketId,
        client: ClientKey,
        requested: Option<&str>,
        identity: Option<Identity>,
        address: Option<String>,
        client_id: Option<String>,
        now: u64,
        entropy: impl FnMut() -> u64,
    ) -> Joined {
        let holder = Holder::of(&id, identity.as_ref());
        let (mut refused_nick, mut reservation, mut first) = (None, None, true);
        let nick = match &identity {
            Some(user) => match self.users.get(&user.id) {
                Some(presence) => {
                    first = false;
                    presence.nick.clone()
                }
                None => {
                    let nick = self.free_variant(&user.name, &holder);
                    let nick_key = nicknames::key(&nick);
                    if self.reserved.get(&nick_key) != Some(&user.id) {
                        self.reserved.insert(nick_key.clone(), user.id.clone());
                        reservation = Some(Reservation { nick_key, user: user.id.clone() });
                    }
                    nick
                }
            },
            None => match requested.map(|nick| validate_nick(nick).and_then(|nick| self.available(nick, &holder))) {
                Some(Ok(nick)) => nick.to_owned(),
                Some(Err(code)) => {
                    refused_nick = Some(code);
                    self.random_nick(entropy)
                }
                None => self.random_nick(entropy),
            },
        };
        let member = self.insert(id.clone(), nick.clone(), now, client, now, identity, address, client_id);
        let attachment = member.attachment(&id);
        let you = You { nick: nick.clone(), id: member.identity.as_ref().map(|u| u.id.clone()), role: member.role() };
        let announcement = first.then_some(ServerFrame::Joined { nick, at: now });
        Joined { attachment, refused_nick, announcement, you, reservation }
    }

    /// Handles one frame from socket `id`, reading what it needs of the stored `history`.
    /// Every frame but `typing` counts against its socket's and its client's budget; only the
    /// socket's own one can close it for flooding, so that a client is never cut off for what the
    /// other sockets behind its address sent.
    pub fn receive(&mut self, id: &str, frame: Incoming<'_>, now: u64, history: &dyn History) -> Reaction {
        let rate = self.limits.rate;
        let Some(member) = self.members.get_mut(id) else { return Reaction::Nothing };
        // Checked first, so that nothing sent after expiry is stored.
        if member.identity.as_ref().is_some_and(|user| now >= user.expires_at) {
            return self.kick(id, now, ErrorCode::TicketExpired, close::UNAUTHORIZED, TICKET_EXPIRED_REASON);
        }
        let parsed = parse_client_frame(frame);
        // Typing has a throttle of its own and costs no message budget: extra ones are dropped,
        // as are those of people who may not post.
        if matches!(parsed, Ok(ClientFrame::Typing)) {
            if !member.role().may_speak() || !typing_allowed(member.last_typing, now) || self.muted(id, now) {
                return Reaction::Nothing;
            }
            let member = self.members.get_mut(id).expect("a member");
            member.last_typing = Some(now);
            return Reaction::Typing(ServerFrame::Typing { nick: member.nick.clone(), until: now + TYPING_FOR_MS });
        }
        match member.flood.frame(rate, now) {
            Verdict::Pass => {}
            Verdict::Drop => return Reaction::Reply(ServerFrame::error(ErrorCode::RateLimited)),
            Verdict::Close => return self.kick(id, now, ErrorCode::RateLimited, close::POLICY_VIOLATION, FLOODING_REASON),
        }
        if !self.clients.try_frame(member.client, self.limits.client, now) {
            return Reaction::Reply(ServerFrame::error(ErrorCode::RateLimited));
        }
        let (role, ticketed) = (member.role(), member.identity.is_some());
        let outcome = match parsed {
            Ok(ClientFrame::Message { .. } | ClientFrame::Edit { .. } | ClientFrame::React { .. })
                if !role.may_speak() =>
            {
                Err(ErrorCode::Forbidden)
            }
            Ok(ClientFrame::Message { text, cid, reply_to }) => self.post(id, &text, cid, reply_to, now, history),
            Ok(ClientFrame::Edit { id: message, text }) => self.edit(id, message, &text, now, history),
            Ok(ClientFrame::React { id: message, emoji }) => self.react(id, message, emoji, now, history),
            Ok(ClientFrame::Typing) => Ok(Reaction::Nothing),
            // A member deletes their own message; a moderator's delete is moderation.
            Ok(ClientFrame::Moderate(Action::Delete { id: message })) if role != Role::Moderator => {
                self.delete_own(id, message, now, history)
            }
            // A ticketed nick is the application's to choose.
            Ok(ClientFrame::Nick { .. }) if ticketed || !role.may_speak() => Err(ErrorCode::Forbidden),
            Ok(ClientFrame::Nick { nick }) => self.rename(id, &nick, now),
            Ok(ClientFrame::Moderate(_)) if role != Role::Moderator => Err(ErrorCode::Forbidden),
            Ok(ClientFrame::Moderate(action)) => {
                let by = self.members[id].nick.clone();
                self.moderate(action, by, Some(id), now, history).map(Reaction::Moderate)
            }
            Err(code) => Err(code),
        };
        outcome.unwrap_or_else(|code| Reaction::Reply(ServerFrame::error(code)))
    }

    /// Removes socket `id`, returning the `left` frame for the others, or `None` when it was
    /// not a member (already left, or kicked) or its person is still here on another socket.
    pub fn leave(&mut self, id: &str, now: u64) -> Option<ServerFrame> {
        let member = self.members.remove(id)?;
        self.clients.remove_socket(member.client);
        if let Some(user) = &member.identity {
            let presence = self.users.get_mut(&user.id)?;
            presence.sockets -= 1;
            if presence.sockets > 0 {
                return None;
            }
            self.users.remove(&user.id);
        }
        self.owners.remove(&nicknames::key(&member.nick));
        Some(ServerFrame::Left { nick: member.nick, at: now })
    }

    /// Decides a moderation action by `by` (a moderator's nick, or `admin` for the operator);
    /// `actor` is the moderator's socket, who may not act on themselves.
    pub fn moderate(
        &mut self,
        action: Action,
        by: String,
        actor: Option<&str>,
        now: u64,
        history: &dyn History,
    ) -> Result<Moderation, ErrorCode> {
        let mut moderation = Moderation {
            action: action.clone(),
            by,
            target: None,
            ejected: Vec::new(),
            close: (close::KICKED, KICKED_REASON),
            left: None,
            imposed: None,
            lifted: Vec::new(),
            deleted: None,
        };
        match action {
            Action::Delete { id } => {
                let stored = live(history.message(id)?)?;
                if !self.history_known {
                    return Err(ErrorCode::Unavailable);
                }
                moderation.target = Some(stored.message.nick);
                moderation.deleted = Some(Change::Delete { id, at: now, seq: self.next_seq() });
            }
            Action::Clear => {}
            Action::Slow { seconds } => self.slow_ms = seconds * 1000,
            Action::Unban { nick } => {
                moderation.lifted = self.sanctions.lift_bans(&nicknames::key(&nick), now);
                if moderation.lifted.is_empty() {
                    return Err(ErrorCode::NotFound);
                }
                moderation.target = Some(nick);
            }
            Action::Kick { ref nick } | Action::Ban { ref nick, .. } | Action::Mute { ref nick, .. } => {
                let sockets = self.sockets_of(nick);
                let Some(first) = sockets.first() else { return Err(ErrorCode::NotFound) };
                if actor.is_some_and(|actor| sockets.iter().any(|id| id == actor)) {
                    return Err(ErrorCode::Forbidden);
                }
                let member = &self.members[first];
                let nick = member.nick.clone();
                let sanction = |kind, duration_s: Option<u64>| {
                    let target = member.target()?;
                    let until = duration_s.map(|seconds| now.saturating_add(seconds.saturating_mul(1000)));
                    Some(Sanction { kind, target, nick: nick.clone(), until })
                };
                moderation.imposed = match action {
                    Action::Ban { duration_s, .. } => sanction(SanctionKind::Ban, duration_s),
                    Action::Mute { duration_s, .. } => sanction(SanctionKind::Mute, Some(duration_s)),
                    _ => None,
                };
                if let Some(imposed) = &moderation.imposed {
                    self.sanctions.impose(imposed.clone());
                }
                if !matches!(action, Action::Mute { .. }) {
                    if matches!(action, Action::Ban { .. }) {
                        moderation.close = (close::FORBIDDEN, BANNED_REASON);
                    }
                    for id in sockets {
                        moderation.ejected.push(Attachment { gone: true, ..self.members[&id].attachment(&id) });
                        moderation.left = self.leave(&id, now).or(moderation.left);
                    }
                }
                moderation.target = Some(nick);
            }
        }
        Ok(moderation)
    }

    /// Every socket of the person holding `nick`.
    fn sockets_of(&self, nick: &str) -> Vec<SocketId> {
        match self.owners.get(&nicknames::key(nick)).map(|owner| &owner.holder) {
            None => Vec::new(),
            Some(Holder::Socket(id)) => vec![id.clone()],
            Some(Holder::User(user)) => self
                .members
                .iter()
                .filter(|(_, m)| m.identity.as_ref().is_some_and(|identity| &identity.id == user))
                .map(|(id, _)| id.clone())
                .collect(),
        }
    }

    fn post(
        &mut self,
        id: &str,
        text: &str,
        cid: Option<String>,
        reply_to: Option<u64>,
        now: u64,
        history: &dyn History,
    ) -> Result<Reaction, ErrorCode> {
        let sender = self.members[id].sender_key(id);
        if let Some(cid) = &cid {
            if let Some(original) = history.by_cid(&sender, cid)? {
                return Ok(Reaction::Resend(ChatMessage { cid: Some(cid.clone()), ..original }));
            }
        }
        let text = clean_text(text)?;
        if self.muted(id, now) {
            return Err(ErrorCode::Forbidden);
        }
        if let Some(reply_to) = reply_to {
            history.message(reply_to)?.ok_or(ErrorCode::NotFound)?;
        }
        let member = &self.members[id];
        if self.slow_ms > 0 && member.role() != Role::Moderator {
            let person = Holder::of(id, member.identity.as_ref());
            let key = match person {
                Holder::Socket(id) => id,
                Holder::User(user) => user,
            };
            if self.last_posts.get(&key).is_some_and(|&last| now < last.saturating_add(self.slow_ms)) {
                return Err(ErrorCode::SlowMode);
            }
            self.last_posts.insert(key, now);
        }
        if !self.history_known {
            return Err(ErrorCode::Unavailable);
        }
        if !self.posts.try_take(self.limits.room, now) {
            return Err(ErrorCode::RateLimited);
        }
        self.last_id += 1;
        self.last_at = self.last_at.max(now);
        let seq = self.next_seq();
        let member = &self.members[id];
        let message = ChatMessage {
            id: self.last_id,
            nick: member.nick.clone(),
            text,
            at: self.last_at,
            seq,
            uid: member.identity.as_ref().map(|user| user.id.clone()),
            reply_to,
            ..ChatMessage::default()
        };
        Ok(Reaction::Post { message, sender, cid })
    }

    fn edit(&mut self, id: &str, message: u64, text: &str, now: u64, history: &dyn History) -> Outcome {
        let text = clean_text(text)?;
        if self.muted(id, now) {
            return Err(ErrorCode::Forbidden);
        }
        let stored = live(history.message(message)?)?;
        check_edit(&stored, &self.members[id].sender_key(id), now, self.limits.edit_window_ms)?;
        self.take_room_budget(now)?;
        let seq = self.next_seq();
        Ok(Reaction::Change(Change::Edit { id: message, text, edited_at: now, seq }))
    }

    fn delete_own(&mut self, id: &str, message: u64, now: u64, history: &dyn History) -> Outcome {
        let stored = live(history.message(message)?)?;
        check_delete(&stored, &self.members[id].sender_key(id))?;
        self.take_room_budget(now)?;
        let seq = self.next_seq();
        Ok(Reaction::Change(Change::Delete { id: message, at: now, seq }))
    }

    fn react(&mut self, id: &str, message: u64, emoji: String, now: u64, history: &dyn History) -> Outcome {
        if !crate::chat::emoji::is_one_emoji(&emoji) {
            return Err(ErrorCode::BadEmoji);
        }
        if self.muted(id, now) {
            return Err(ErrorCode::Forbidden);
        }
        let stored = live(history.message(message)?)?;
        let sender = self.members[id].sender_key(id);
        let (added, counts) = toggle_reaction(&stored, &sender, &emoji)?;
        self.take_room_budget(now)?;
        let seq = self.next_seq();
        Ok(Reaction::Change(Change::React { id: message, emoji, sender, added, counts, seq }))
    }

    fn muted(&self, id: &str, now: u64) -> bool {
        let member = &self.members[id];
        let user = member.identity.as_ref().map(|user| user.id.as_str());
        self.sanctions.applies(SanctionKind::Mute, user, member.address.as_deref(), now)
    }

    /// A change to the history costs the room's budget like a post, and needs the stored
    /// history's end known, so that its sequence number follows the stored ones.
    fn take_room_budget(&mut self, now: u64) -> Result<(), ErrorCode> {
        if !self.history_known {
            return Err(ErrorCode::Unavailable);
        }
        if !self.posts.try_take(self.limits.room, now) {
            return Err(ErrorCode::RateLimited);
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    fn rename(&mut self, id: &str, wanted: &str, now: u64) -> Result<Reaction, ErrorCode> {
        let wanted = validate_nick(wanted)?;
        let current = self.members[id].nick.clone();
        if wanted == current {
            return Ok(Reaction::Nothing);
        }
        let holder = Holder::Socket(id.to_owned());
        let wanted = self.available(wanted, &holder)?.to_owned();
        self.owners.remove(&nicknames::key(&current));
        self.owners.insert(nicknames::key(&wanted), Owner { nick: wanted.clone(), holder });
        let member = self.members.get_mut(id).expect("renaming a member");
        member.nick = wanted.clone();
        let attachment = member.attachment(id);
        Ok(Reaction::Renamed { frame: ServerFrame::Renamed { from: current, to: wanted, at: now }, attachment })
    }

    /// Closes socket `id` for `reason`, telling it `error` first.
    fn kick(&mut self, id: &str, now: u64, error: ErrorCode, code: u16, reason: &'static str) -> Reaction {
        let attachment = Attachment { gone: true, ..self.members[id].attachment(id) };
        let left = self.leave(id, now);
        Reaction::Kick { error: ServerFrame::error(error), attachment, code, reason, left }
    }

    /// `nick` if nobody but `holder` holds or reserved it.
    fn available<'n>(&self, nick: &'n str, holder: &Holder) -> Result<&'n str, ErrorCode> {
        if self.free_for(nick, holder) {
            Ok(nick)
        } else {
            Err(ErrorCode::NickTaken)
        }
    }

    fn free_for(&self, nick: &str, holder: &Holder) -> bool {
        let key = nicknames::key(nick);
        let held_by_another = self.owners.get(&key).is_some_and(|owner| &owner.holder != holder);
        let reserved_for_another = self
            .reserved
            .get(&key)
            .is_some_and(|user| !matches!(holder, Holder::User(me) if me == user));
        !held_by_another && !reserved_for_another
    }

    /// `name`, or the first of `name-2`, `name-3`... that `holder` may take, cut to fit a nick.
    fn free_variant(&self, name: &str, holder: &Holder) -> String {
        if self.free_for(name, holder) {
            return name.to_owned();
        }
        (2u32..)
            .map(|n| {
                let suffix = format!("-{n}");
                // Ticket names are valid nicks, so ASCII: cutting at a byte is cutting at a character.
                format!("{}{suffix}", &name[..name.len().min(MAX_NICK_CHARS - suffix.len())])
            })
            .find(|nick| self.free_for(nick, holder))
            .expect("some number is free")
    }

    fn random_nick(&self, entropy: impl FnMut() -> u64) -> String {
        nicknames::unused_random_nick(entropy, |nick| {
            let key = nicknames::key(nick);
            self.owners.contains_key(&key) || self.reserved.contains_key(&key)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        id: SocketId,
        nick: String,
        joined: u64,
        client: ClientKey,
        now: u64,
        identity: Option<Identity>,
        address: Option<String>,
        client_id: Option<String>,
    ) -> &Member {
        let holder = Holder::of(&id, identity.as_ref());
        if let Some(user) = &identity {
            self.users.entry(user.id.clone()).or_insert(Presence { nick: nick.clone(), sockets: 0 }).sockets += 1;
        }
        self.owners.insert(nicknames::key(&nick), Owner { nick: nick.clone(), holder });
        self.clients.add_socket(client, self.limits.client, now);
        let flood = FloodGuard::new(self.limits.rate, now);
        let member = Member { nick, joined, client, flood, identity, address, client_id, last_typing: None };
        self.members.entry(id).insert_entry(member).into_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::flood::FLOOD_SECONDS;
    use crate::chat::rate_limit::RateLimit;
    use crate::chat::messages::memory::MemoryHistory;
    use crate::chat::outbox::SocketAttachment;

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

    fn join(room: &mut Room, id: &str, nick: Option<&str>) -> Joined {
        room.join(id.into(), ClientKey::of(id, [0, 0]), nick, None, Some(format!("addr-{id}")), None, 1_000, counter())
    }

    fn posted(reaction: &Reaction) -> bool {
        matches!(reaction, Reaction::Post { .. })
    }

    fn say(room: &mut Room, id: &str, text: &str, now: u64) -> Reaction {
        room.receive(id, Incoming::Text(text), now, &MemoryHistory::default())
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
        assert_eq!(ann.announcement, Some(ServerFrame::Joined { nick: "Ann".into(), at: 1_000 }));
        assert_eq!(ann.you, You { nick: "Ann".into(), id: None, role: Role::Member });

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
        assert_eq!(first, Reaction::Post { message: ChatMessage { id: 42, nick: "Ann".into(), text: "hi".into(), at: 5_000, seq: 1, ..Default::default() }, sender: "s:s1".into(), cid: None });
        let second = say(&mut room, "s1", "plain text", 6_000);
        assert_eq!(second, Reaction::Post { message: ChatMessage { id: 43, nick: "Ann".into(), text: "plain text".into(), at: 6_000, seq: 2, ..Default::default() }, sender: "s:s1".into(), cid: None });
    }

    #[test]
    fn refused_messages_consume_no_id() {
        let mut room = room();
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "   ", 1)), Some(ErrorCode::Empty));
        assert_eq!(error_code(&say(&mut room, "s1", &"x".repeat(2001), 1)), Some(ErrorCode::TooLong));
        assert_eq!(error_code(&say(&mut room, "s1", "{oops", 1)), Some(ErrorCode::BadJson));
        assert_eq!(error_code(&say(&mut room, "s1", r#"{"type":"dance"}"#, 1)), Some(ErrorCode::BadType));
        assert_eq!(error_code(&room.receive("s1", Incoming::Binary, 1, &MemoryHistory::default())), Some(ErrorCode::Unsupported));
        match say(&mut room, "s1", "ok", 1) {
            Reaction::Post { message, .. } => assert_eq!(message.id, 1),
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
            assert!(matches!(say(&mut room, "s1", "spam", 1_000), Reaction::Post { .. }));
        }
        assert_eq!(error_code(&say(&mut room, "s1", "spam", 1_000)), Some(ErrorCode::RateLimited));
        // Others are unaffected.
        assert!(matches!(say(&mut room, "s2", "hello", 1_000), Reaction::Post { .. }));
        // A token comes back every 200 ms; the socket stays open while it keeps being dropped...
        assert!(matches!(say(&mut room, "s1", "later", 1_200), Reaction::Post { .. }));
        for _ in 0..10 {
            assert_eq!(error_code(&say(&mut room, "s1", "spam", 1_200)), Some(ErrorCode::RateLimited));
        }
        // ...until, sending ten a second, it is still over its limit FLOOD_SECONDS after its first
        // dropped frame (at 1 s).
        let mut later = 1_200;
        let kick = loop {
            later += 100;
            match say(&mut room, "s1", "spam", later) {
                Reaction::Post { .. } => {}
                Reaction::Reply(error) => assert_eq!(error, ServerFrame::error(ErrorCode::RateLimited)),
                kick => break kick,
            }
        };
        let spell = later - 1_000;
        assert!((FLOOD_SECONDS * 1000..FLOOD_SECONDS * 1000 + 300).contains(&spell), "closed at its first drop after {spell} ms");
        match kick {
            Reaction::Kick { error, attachment, code, reason, left } => {
                assert_eq!(error, ServerFrame::error(ErrorCode::RateLimited));
                assert!(attachment.gone);
                assert_eq!(code, 1008);
                assert!(reason.len() <= crate::chat::close::MAX_REASON_BYTES);
                assert_eq!(left, Some(ServerFrame::Left { nick: "Ann".into(), at: later }));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(room.nicks(), ["Bob"]);
        assert_eq!(room.leave("s1", later), None, "a kicked socket's close announces nothing more");
    }

    #[test]
    fn rate_limit_counts_every_frame_and_is_configurable() {
        let limits = RoomLimits { rate: RateLimit { burst: 2, per_second: 1 }, ..RoomLimits::default() };
        let mut room: Room = Room::new(limits, 0, 0);
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "", 0)), Some(ErrorCode::Empty));
        assert!(matches!(say(&mut room, "s1", "one", 0), Reaction::Post { .. }));
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
        assert!(matches!(say(&mut after, "s1", "back", 50_001), Reaction::Post { message: ChatMessage { id: 6, .. }, .. }));
    }

    fn user(id: &str, name: &str, role: Role) -> Identity {
        Identity { id: id.into(), name: name.into(), role, expires_at: 1_000_000 }
    }

    fn join_as(room: &mut Room, id: &str, user: &Identity) -> Joined {
        room.join(id.into(), ClientKey::of(id, [0, 0]), Some("Ignored"), Some(user.clone()), None, None, 1_000, counter())
    }

    #[test]
    fn a_ticketed_nick_is_reserved_for_its_identity() {
        let mut room = room();
        let ann = user("u1", "Ann", Role::Member);
        let joined = join_as(&mut room, "s1", &ann);
        assert_eq!(joined.attachment.nick, "Ann", "the ticket's name, not the query's");
        assert_eq!(joined.you, You { nick: "Ann".into(), id: Some("u1".into()), role: Role::Member });
        assert_eq!(joined.reservation, Some(Reservation { nick_key: "ann".into(), user: "u1".into() }));
        assert_eq!(join(&mut room, "s2", Some("ANN")).refused_nick, Some(ErrorCode::NickTaken));
        let nick = |n: &str| format!(r#"{{"type":"nick","nick":"{n}"}}"#);
        assert_eq!(error_code(&say(&mut room, "s2", &nick("ann"), 2_000)), Some(ErrorCode::NickTaken));
        // Another identity with the same name gets a variant, and the welcome says which.
        let other = join_as(&mut room, "s3", &user("u2", "Ann", Role::Member));
        assert_eq!(other.you.nick, "Ann-2");
        // Reserved while away too: the reservation outlives the socket.
        room.leave("s1", 3_000);
        assert_eq!(join(&mut room, "s4", Some("Ann")).refused_nick, Some(ErrorCode::NickTaken));
        assert_eq!(join_as(&mut room, "s5", &ann).reservation, None, "already reserved for u1");
        assert_eq!(room.nicks().iter().filter(|n| n.starts_with("Ann")).count(), 2);
    }

    #[test]
    fn stored_reservations_hold_after_a_restart() {
        let mut room = room();
        room.restore_reservation(Reservation { nick_key: "ann".into(), user: "u1".into() });
        assert_eq!(join(&mut room, "s1", Some("Ann")).refused_nick, Some(ErrorCode::NickTaken));
        assert_eq!(join_as(&mut room, "s2", &user("u2", "Ann", Role::Member)).you.nick, "Ann-2");
        assert_eq!(join_as(&mut room, "s3", &user("u1", "Ann", Role::Member)).you.nick, "Ann");
    }

    #[test]
    fn variants_fit_a_nick() {
        let mut room = room();
        let long = "a".repeat(MAX_NICK_CHARS);
        join_as(&mut room, "s1", &user("u1", &long, Role::Member));
        let variant = join_as(&mut room, "s2", &user("u2", &long, Role::Member)).you.nick;
        assert_eq!(variant, format!("{}-2", "a".repeat(MAX_NICK_CHARS - 2)));
        assert!(validate_nick(&variant).is_ok());
    }

    #[test]
    fn presence_is_per_identity_across_sockets() {
        let mut room = room();
        let ann = user("u1", "Ann", Role::Member);
        assert!(join_as(&mut room, "tab1", &ann).announcement.is_some());
        let second = join_as(&mut room, "tab2", &ann);
        assert_eq!(second.announcement, None, "one joined per person");
        assert_eq!(second.attachment.nick, "Ann");
        assert_eq!(room.nicks(), ["Ann"]);
        match say(&mut room, "tab2", "from tab 2", 2_000) {
            Reaction::Post { message, .. } => assert_eq!((message.nick.as_str(), message.uid.as_deref()), ("Ann", Some("u1"))),
            other => panic!("{other:?}"),
        }
        assert_eq!(room.leave("tab1", 3_000), None, "still here in tab 2");
        assert_eq!(room.nicks(), ["Ann"]);
        assert_eq!(room.leave("tab2", 3_000), Some(ServerFrame::Left { nick: "Ann".into(), at: 3_000 }));
        assert!(room.nicks().is_empty());
    }

    #[test]
    fn restored_sockets_of_one_identity_are_one_person() {
        let mut before = room();
        let ann = user("u1", "Ann", Role::Member);
        let tab1 = join_as(&mut before, "tab1", &ann).attachment;
        let tab2 = join_as(&mut before, "tab2", &ann).attachment;
        let mut after = room();
        assert!(after.restore(tab1, 5_000) && after.restore(tab2, 5_000));
        assert_eq!(after.nicks(), ["Ann"]);
        assert_eq!(after.leave("tab1", 6_000), None);
        assert!(after.leave("tab2", 6_000).is_some());
    }

    #[test]
    fn readonly_users_read_but_neither_post_nor_rename() {
        let mut room = room();
        join_as(&mut room, "s1", &user("u1", "Reader", Role::Readonly));
        assert_eq!(room.nicks(), ["Reader"]);
        assert_eq!(error_code(&say(&mut room, "s1", "hello", 2_000)), Some(ErrorCode::Forbidden));
        assert_eq!(error_code(&say(&mut room, "s1", r#"{"type":"nick","nick":"Other"}"#, 2_000)), Some(ErrorCode::Forbidden));
        join_as(&mut room, "s2", &user("u2", "Writer", Role::Member));
        assert_eq!(
            error_code(&say(&mut room, "s2", r#"{"type":"nick","nick":"Other"}"#, 2_000)),
            Some(ErrorCode::Forbidden),
            "a ticketed nick comes from the ticket"
        );
    }

    #[test]
    fn an_expired_ticket_is_closed_on_its_next_frame_and_nothing_is_stored() {
        let mut room = room();
        let ann = user("u1", "Ann", Role::Member);
        join_as(&mut room, "s1", &ann);
        join_as(&mut room, "s2", &ann);
        assert!(matches!(say(&mut room, "s1", "in time", ann.expires_at - 1), Reaction::Post { .. }));
        match say(&mut room, "s1", "too late", ann.expires_at) {
            Reaction::Kick { error, attachment, code, left, .. } => {
                assert_eq!(error, ServerFrame::error(ErrorCode::TicketExpired));
                assert_eq!(code, close::UNAUTHORIZED);
                assert!(attachment.gone);
                assert_eq!(left, None, "Ann is still here on her other socket");
            }
            other => panic!("{other:?}"),
        }
        match say(&mut room, "s2", "too late", ann.expires_at) {
            Reaction::Kick { left, .. } => assert!(left.is_some(), "her last socket leaves"),
            other => panic!("{other:?}"),
        }
        assert!(room.nicks().is_empty());
    }

    fn admits(room: &mut Room, identity: Option<&Identity>, address: Option<&str>, now: u64) -> bool {
        let client = ClientKey::of(address.unwrap_or("none"), [9, 9]);
        match room.admit(client, identity, address, now) {
            Ok(()) => true,
            Err(refusal) => {
                assert_eq!(refusal.code, close::FORBIDDEN);
                false
            }
        }
    }

    fn moderate(room: &mut Room, action: Action) -> Result<Moderation, ErrorCode> {
        room.moderate(action, "admin".into(), None, 5_000, &MemoryHistory::default())
    }

    #[test]
    fn only_moderators_moderate_and_not_themselves() {
        let mut room = room();
        join_as(&mut room, "mod", &user("m1", "Mod", Role::Moderator));
        join_as(&mut room, "ann", &user("u1", "Ann", Role::Member));
        let kick = |nick: &str| format!(r#"{{"type":"kick","nick":"{nick}"}}"#);
        assert_eq!(error_code(&say(&mut room, "ann", &kick("Mod"), 2_000)), Some(ErrorCode::Forbidden));
        assert_eq!(error_code(&say(&mut room, "mod", &kick("Mod"), 2_000)), Some(ErrorCode::Forbidden));
        assert_eq!(error_code(&say(&mut room, "mod", &kick("Nobody"), 2_000)), Some(ErrorCode::NotFound));
        match say(&mut room, "mod", &kick("ann"), 2_000) {
            Reaction::Moderate(moderation) => {
                assert_eq!((moderation.by.as_str(), moderation.target.as_deref()), ("Mod", Some("Ann")));
                assert_eq!(moderation.close.0, close::KICKED);
                assert_eq!(moderation.left, Some(ServerFrame::Left { nick: "Ann".into(), at: 2_000 }));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(room.nicks(), ["Mod"]);
    }

    #[test]
    fn a_kick_closes_every_socket_of_the_person_with_one_left() {
        let mut room = room();
        let ann = user("u1", "Ann", Role::Member);
        join_as(&mut room, "tab1", &ann);
        join_as(&mut room, "tab2", &ann);
        join(&mut room, "bob", Some("Bob"));
        let kicked = moderate(&mut room, Action::Kick { nick: "Ann".into() }).unwrap();
        let mut ids: Vec<&str> = kicked.ejected.iter().map(|a| a.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["tab1", "tab2"]);
        assert!(kicked.ejected.iter().all(|a| a.gone));
        assert_eq!(kicked.left, Some(ServerFrame::Left { nick: "Ann".into(), at: 5_000 }));
        assert_eq!(kicked.imposed, None, "a kick is not a ban");
        assert!(admits(&mut room, Some(&ann), None, 5_000));
        assert_eq!(room.nicks(), ["Bob"]);
    }

    #[test]
    fn bans_name_an_identity_or_an_address_and_end_on_their_own() {
        let mut room = room();
        let ann = user("u1", "Ann", Role::Member);
        join_as(&mut room, "s1", &ann);
        join(&mut room, "s2", Some("Bob"));
        let banned = moderate(&mut room, Action::Ban { nick: "Ann".into(), duration_s: Some(60) }).unwrap();
        assert_eq!(banned.close.0, close::FORBIDDEN);
        assert_eq!(banned.imposed.as_ref().unwrap().until, Some(65_000));
        assert!(!admits(&mut room, Some(&ann), Some("anywhere"), 64_999));
        assert!(admits(&mut room, Some(&ann), None, 65_000), "over after its duration");
        assert!(admits(&mut room, Some(&user("u2", "Ann", Role::Member)), None, 6_000));

        let bob = moderate(&mut room, Action::Ban { nick: "Bob".into(), duration_s: None }).unwrap();
        assert_eq!(bob.imposed.unwrap().target, Target::Address("addr-s2".into()));
        assert!(!admits(&mut room, None, Some("addr-s2"), u64::MAX), "for good");
        assert!(admits(&mut room, None, Some("addr-other"), 6_000));
        assert_eq!(room.bans(6_000).len(), 2);

        let lifted = moderate(&mut room, Action::Unban { nick: "bob".into() }).unwrap();
        assert_eq!(lifted.lifted.len(), 1);
        assert!(admits(&mut room, None, Some("addr-s2"), 6_000));
        assert_eq!(moderate(&mut room, Action::Unban { nick: "bob".into() }).unwrap_err(), ErrorCode::NotFound);
    }

    #[test]
    fn a_muted_person_reads_but_cannot_post_until_the_mute_ends() {
        let mut room = room();
        join(&mut room, "s1", Some("Bob"));
        let muted = moderate(&mut room, Action::Mute { nick: "Bob".into(), duration_s: 10 }).unwrap();
        assert!(muted.ejected.is_empty(), "a mute keeps the socket");
        assert_eq!(error_code(&say(&mut room, "s1", "let me speak", 14_999)), Some(ErrorCode::Forbidden));
        assert!(matches!(say(&mut room, "s1", "thanks", 15_000), Reaction::Post { .. }));
    }

    #[test]
    fn slow_mode_allows_one_message_per_person_per_interval() {
        let mut room = room();
        join(&mut room, "s1", Some("Bob"));
        join_as(&mut room, "mod", &user("m1", "Mod", Role::Moderator));
        moderate(&mut room, Action::Slow { seconds: 10 }).unwrap();
        assert!(matches!(say(&mut room, "s1", "one", 20_000), Reaction::Post { .. }));
        assert_eq!(error_code(&say(&mut room, "s1", "two", 29_999)), Some(ErrorCode::SlowMode));
        assert!(matches!(say(&mut room, "s1", "two", 30_000), Reaction::Post { .. }));
        assert!(matches!(say(&mut room, "mod", "a", 30_000), Reaction::Post { .. }));
        assert!(matches!(say(&mut room, "mod", "b", 30_001), Reaction::Post { .. }), "moderators are not slowed");
        moderate(&mut room, Action::Slow { seconds: 0 }).unwrap();
        assert!(matches!(say(&mut room, "s1", "three", 30_001), Reaction::Post { .. }));
    }

    #[test]
    fn attachments_round_trip_and_stay_small() {
        let client = ClientKey::of("192.0.2.1", [7, 7]);
        let member =
            Attachment { id: "abc".into(), nick: "Ann".into(), joined: 5, client, identity: None, address: None, client_id: None, gone: false };
        let attachment = SocketAttachment { member, batch: false, seen: 5, socketio: None };
        let text = attachment.encode();
        assert!(text.starts_with("abc,Ann,5,") && text.len() < 48, "{text}");
        assert!(!text.contains("192.0.2.1"), "the address itself is never kept");
        assert_eq!(SocketAttachment::decode(&text), Some(attachment));
    }
    #[test]
    fn a_client_shares_one_budget_across_its_sockets_and_reconnects() {
        let limits = RoomLimits { room: RateLimit { burst: 1_000, per_second: 1_000 }, ..RoomLimits::default() };
        let mut room = Room::new(limits, 0, 0);
        let client = ClientKey::of("198.51.100.9", [1, 1]);
        let mut posts = 0;
        for socket in 0..5 {
            let id = format!("s{socket}");
            room.join(id.clone(), client, None, None, None, None, 0, counter());
            posts += (0..20).filter(|_| posted(&say(&mut room, &id, "spam", 0))).count();
            room.leave(&id, 0);
        }
        assert_eq!(posts, 60, "CLIENT_BURST, however many sockets it opens");
        join(&mut room, "other", None);
        assert!(posted(&say(&mut room, "other", "another client is not affected", 0)));
        room.join("again".into(), client, None, None, None, None, 1_000, counter());
        assert_eq!((0..20).filter(|_| posted(&say(&mut room, "again", "spam", 1_000))).count(), 15, "15 per second");
    }

    #[test]
    fn the_client_budget_never_closes_a_socket() {
        let mut room = room();
        let client = ClientKey::of("198.51.100.9", [1, 1]);
        for socket in 0..3 {
            room.join(format!("s{socket}"), client, None, None, None, None, 0, counter());
            for _ in 0..20 {
                say(&mut room, &format!("s{socket}"), "spam", 0);
            }
        }
        room.join("calm".into(), client, Some("Calm"), None, None, None, 0, counter());
        for _ in 0..RateLimit::DEFAULT.burst {
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
            assert_eq!(room.admit(client, None, None, 0), Ok(()));
        }
        let refusal = room.admit(client, None, None, 0).unwrap_err();
        assert_eq!(refusal.error, ServerFrame::error(ErrorCode::RateLimited));
        assert_eq!(refusal.code, 4429);
        assert!(refusal.reason.len() <= crate::chat::close::MAX_REASON_BYTES);
        assert_eq!(room.admit(ClientKey::of("203.0.113.2", [0, 0]), None, None, 0), Ok(()), "others still join");
        assert_eq!(room.admit(client, None, None, 20_000), Ok(()));
    }

    #[test]
    fn a_client_holds_at_most_its_sockets_in_a_room() {
        let limits = RoomLimits { max_client_sockets: 2, client_joins: 100, ..RoomLimits::default() };
        let mut room = Room::new(limits, 0, 0);
        let client = ClientKey::of("203.0.113.1", [0, 0]);
        for socket in ["s1", "s2"] {
            assert_eq!(room.admit(client, None, None, 0), Ok(()));
            room.join(socket.into(), client, None, None, None, None, 0, counter());
        }
        let refusal = room.admit(client, None, None, 0).unwrap_err();
        assert_eq!(refusal.error, ServerFrame::error(ErrorCode::TooManyConnections));
        assert_eq!(refusal.code, close::TRY_LATER);
        room.leave("s1", 1);
        assert_eq!(room.admit(client, None, None, 1), Ok(()), "a place is free again");
    }

    #[test]
    fn nothing_is_posted_until_the_stored_history_is_known() {
        let mut room = Room::awaiting_history(RoomLimits::default());
        join(&mut room, "s1", None);
        assert_eq!(error_code(&say(&mut room, "s1", "hello", 1)), Some(ErrorCode::Unavailable));
        room.resume_history(500, 7, 0);
        match say(&mut room, "s1", "hello", 1) {
            Reaction::Post { message, .. } => assert_eq!((message.id, message.at), (501, 7)),
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
            Reaction::Post { message, .. } => assert_eq!((message.id, message.text.as_str()), (1, "line\nbreak")),
            other => panic!("{other:?}"),
        }
    }

    /// A room and its stored history in memory: every decided post and change is stored.
    struct Chat {
        room: Room,
        history: MemoryHistory,
    }

    impl Chat {
        fn new() -> Chat {
            Chat { room: room(), history: MemoryHistory::default() }
        }

        fn join(&mut self, socket: &str, client_id: Option<&str>) {
            let client = ClientKey::of(socket, [0, 0]);
            let address = Some(format!("addr-{socket}"));
            self.room.join(socket.into(), client, Some(socket), None, address, client_id.map(Into::into), 0, counter());
        }

        fn send(&mut self, socket: &str, frame: &str, now: u64) -> Reaction {
            let reaction = self.room.receive(socket, Incoming::Text(frame), now, &self.history);
            match &reaction {
                Reaction::Post { message, sender, cid } => self.history.post(message, sender, cid.as_deref()),
                Reaction::Change(change) => assert!(self.history.apply(change)),
                Reaction::Moderate(Moderation { deleted: Some(change), .. }) => assert!(self.history.apply(change)),
                _ => {}
            }
            reaction
        }

        fn post(&mut self, socket: &str, frame: &str, now: u64) -> ChatMessage {
            match self.send(socket, frame, now) {
                Reaction::Post { message, .. } => message,
                other => panic!("{other:?}"),
            }
        }

        fn change(&mut self, socket: &str, frame: &str, now: u64) -> Change {
            match self.send(socket, frame, now) {
                Reaction::Change(change) => change,
                other => panic!("{other:?}"),
            }
        }

        fn refused(&mut self, socket: &str, frame: &str, now: u64) -> Option<ErrorCode> {
            error_code(&self.send(socket, frame, now))
        }
    }

    #[test]
    fn a_resend_with_the_same_sender_and_cid_posts_nothing_and_returns_the_original() {
        let mut chat = Chat::new();
        chat.join("tab1", Some("client-A"));
        let frame = r#"{"type":"message","text":"once","cid":"m1"}"#;
        let original = chat.post("tab1", frame, 1_000);
        assert_eq!((original.id, original.seq, original.cid.as_deref()), (1, 1, None), "the broadcast carries no cid");
        // The same client on a new socket (a reconnect) sends it again: the original comes back.
        chat.room.leave("tab1", 2_000);
        chat.join("tab2", Some("client-A"));
        match chat.send("tab2", frame, 3_000) {
            Reaction::Resend(again) => assert_eq!(again, ChatMessage { cid: Some("m1".into()), ..original.clone() }),
            other => panic!("{other:?}"),
        }
        assert_eq!(chat.room.last_seq(), 1, "nothing changed");
        // Another client may use the same cid; a socket without a client id is its own sender.
        chat.join("other", Some("client-B"));
        assert_eq!(chat.post("other", frame, 4_000).id, 2);
        chat.join("anon", None);
        assert_eq!(chat.post("anon", frame, 4_000).id, 3);
        assert!(matches!(chat.send("anon", frame, 4_001), Reaction::Resend(_)));
        assert_eq!(chat.post("tab2", r#"{"type":"message","text":"twice","cid":"m2"}"#, 5_000).id, 4);
    }

    #[test]
    fn replies_name_a_message_in_the_window() {
        let mut chat = Chat::new();
        chat.join("s1", None);
        chat.post("s1", "first", 1);
        assert_eq!(chat.post("s1", r#"{"type":"message","text":"re","reply_to":1}"#, 2).reply_to, Some(1));
        assert_eq!(chat.refused("s1", r#"{"type":"message","text":"re","reply_to":99}"#, 3), Some(ErrorCode::NotFound));
        assert_eq!(chat.room.last_message().0, 2, "a refused reply takes no id");
    }

    #[test]
    fn only_the_author_edits_within_the_window_and_deletes() {
        let mut chat = Chat::new();
        chat.join("ann", Some("ann-tab"));
        chat.join("bob", None);
        chat.post("ann", "helo", 10_000);
        let edit = r#"{"type":"edit","id":1,"text":"hello"}"#;
        assert_eq!(chat.refused("bob", edit, 10_001), Some(ErrorCode::Forbidden));
        assert_eq!(chat.change("ann", edit, 10_000 + 900_000), Change::Edit { id: 1, text: "hello".into(), edited_at: 910_000, seq: 2 });
        assert_eq!(chat.history.message(1).unwrap().unwrap().message.edited_at, Some(910_000));
        assert_eq!(chat.refused("ann", edit, 10_000 + 900_001), Some(ErrorCode::TooLate));
        assert_eq!(chat.refused("ann", r#"{"type":"edit","id":7,"text":"x"}"#, 10_001), Some(ErrorCode::NotFound));
        assert_eq!(chat.refused("ann", r#"{"type":"edit","id":1,"text":"  "}"#, 10_001), Some(ErrorCode::Empty));
        let delete = r#"{"type":"delete","id":1}"#;
        assert_eq!(chat.refused("bob", delete, 10_002), Some(ErrorCode::Forbidden));
        assert_eq!(chat.change("ann", delete, 2_000_000), Change::Delete { id: 1, at: 2_000_000, seq: 3 });
        assert_eq!(chat.refused("ann", delete, 2_000_001), Some(ErrorCode::NotFound), "deleted already");
        assert_eq!(chat.refused("ann", edit, 10_002), Some(ErrorCode::NotFound), "a tombstone is not edited");
        assert_eq!(Change::Delete { id: 1, at: 5, seq: 3 }.frame(), ServerFrame::Deleted { id: 1, at: 5, seq: 3 });
    }

    #[test]
    fn reactions_toggle_per_sender_and_carry_their_counts() {
        let mut chat = Chat::new();
        chat.join("ann", None);
        chat.join("bob", Some("bob-tab"));
        chat.post("ann", "react to me", 1);
        let thumbs = r#"{"type":"react","id":1,"emoji":"👍"}"#;
        let counts = |change: Change| match change.frame() {
            ServerFrame::Reactions { counts, .. } => counts.iter().map(|(emoji, n)| (emoji.to_owned(), n)).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(counts(chat.change("ann", thumbs, 2)), [("👍".to_owned(), 1)]);
        assert_eq!(counts(chat.change("bob", thumbs, 3)), [("👍".to_owned(), 2)]);
        assert_eq!(counts(chat.change("bob", thumbs, 4)), [("👍".to_owned(), 1)], "a toggle takes it back");
        // Bob again from another tab with the same client id is the same sender.
        chat.join("bob2", Some("bob-tab"));
        assert_eq!(counts(chat.change("bob2", thumbs, 5)), [("👍".to_owned(), 2)]);
        assert_eq!(counts(chat.change("bob", thumbs, 6)), [("👍".to_owned(), 1)]);
        assert_eq!(chat.history.message(1).unwrap().unwrap().message.reactions.len(), 1);
        assert_eq!(chat.refused("ann", r#"{"type":"react","id":1,"emoji":"ok"}"#, 7), Some(ErrorCode::BadEmoji));
        assert_eq!(chat.refused("ann", r#"{"type":"react","id":9,"emoji":"👍"}"#, 7), Some(ErrorCode::NotFound));
        chat.change("ann", r#"{"type":"delete","id":1}"#, 8);
        assert_eq!(chat.refused("ann", thumbs, 9), Some(ErrorCode::NotFound), "a tombstone takes no reactions");
        assert_eq!(chat.room.last_seq(), 7);
    }

    #[test]
    fn a_moderator_delete_takes_a_seq_and_names_the_author() {
        let mut chat = Chat::new();
        chat.join("ann", None);
        chat.post("ann", "rude", 1);
        join_as(&mut chat.room, "mod", &user("m1", "Mod", Role::Moderator));
        match chat.send("mod", r#"{"type":"delete","id":1}"#, 2) {
            Reaction::Moderate(moderation) => {
                assert_eq!(moderation.target.as_deref(), Some("ann"));
                assert_eq!(moderation.deleted, Some(Change::Delete { id: 1, at: 2, seq: 2 }));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(chat.refused("mod", r#"{"type":"delete","id":1}"#, 3), Some(ErrorCode::NotFound), "deleted already");
    }

    #[test]
    fn typing_is_told_to_others_throttled_and_costs_no_message_budget() {
        let mut chat = Chat::new();
        chat.join("ann", None);
        let typing = r#"{"type":"typing"}"#;
        assert_eq!(chat.send("ann", typing, 1_000), Reaction::Typing(ServerFrame::Typing { nick: "ann".into(), until: 7_000 }));
        assert_eq!(chat.send("ann", typing, 2_999), Reaction::Nothing, "dropped silently");
        assert!(matches!(chat.send("ann", typing, 3_000), Reaction::Typing(_)));
        for _ in 0..20 {
            chat.post("ann", "burst", 3_000);
        }
        assert_eq!(chat.refused("ann", "one too many", 3_000), Some(ErrorCode::RateLimited));
        assert!(matches!(chat.send("ann", typing, 5_000), Reaction::Typing(_)), "its own throttle only");
        join_as(&mut chat.room, "reader", &user("r1", "Reader", Role::Readonly));
        assert_eq!(chat.send("reader", typing, 5_000), Reaction::Nothing, "a reader types nothing");
        chat.room.moderate(Action::Mute { nick: "ann".into(), duration_s: 60 }, "admin".into(), None, 5_000, &chat.history).unwrap();
        assert_eq!(chat.send("ann", typing, 8_000), Reaction::Nothing, "nor does a muted person");
    }

    #[test]
    fn seq_follows_the_stored_history_after_a_restart() {
        let mut room = Room::awaiting_history(RoomLimits::default());
        room.resume_history(10, 5, 42);
        join(&mut room, "s1", None);
        match say(&mut room, "s1", "after a restart", 6) {
            Reaction::Post { message, .. } => assert_eq!((message.id, message.seq), (11, 43)),
            other => panic!("{other:?}"),
        }
    }
}
