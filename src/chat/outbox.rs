//! Batched delivery: when a room falls behind, the frames that pile up go out together, as one
//! JSON array per socket that opted in (the `edge-chat.batch` subprotocol) and as the same
//! frames one by one to every other socket. A quiet room sends each frame at once, alone.
//!
//! How the room knows it is behind: after a frame goes out at once, the Durable Object asks the
//! runtime for a tick after the events already queued (a zero-delay timer: workerd runs it
//! only once the WebSocket messages that were waiting have been handled). Frames broadcast
//! before that tick wait for it; the tick sends them as one batch and asks for another tick,
//! and a tick that finds nothing waiting ends the busy spell. A batch is also sent as soon as
//! it reaches `MAX_BATCH_FRAMES` frames or `MAX_BATCH_BYTES` bytes, so a backlog never grows
//! without bound. Rules only: the object carries out what `Outbox` returns.
//!
//! The rooms of one isolate share its event loop, so a room's tick also waits behind the other
//! rooms' events. While another room of the isolate is in a busy spell (`BusyRooms`), the runtime
//! is behind: a native post to a quiet room then waits for a tick as well (`isolate_behind`), and
//! goes out with whatever else that room receives by then, instead of alone. With a single busy
//! room, or none, a quiet room's post still goes out at once.
//!
//! A message whose sender gets its own copy (with the `cid` it sent) is batched too: the sender
//! gets its own array, with its copies in their places, and everyone else the shared one.
//!
//! Joins go through the outbox too, so that a join storm sends its `joined` frames in batches.
//! A socket that joins while frames are held is a newcomer until the next delivery: its welcome
//! already reflects those frames, so it gets only the frames produced after its join.

use std::cell::Cell;
use std::rc::Rc;

use crate::chat::clients::ClientKey;
use crate::chat::fields::{Reader, Writer};
use crate::chat::room::Attachment;
use crate::chat::socketio::SocketIoAttachment;

/// The WebSocket subprotocol a client offers to receive batches.
pub const BATCH_PROTOCOL: &str = "edge-chat.batch";
/// The most frames in one batch.
pub const MAX_BATCH_FRAMES: usize = 64;
/// A batch is sent once its frames reach this many bytes (a broadcast chat frame is at most ~8 KiB).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Whether a `Sec-WebSocket-Protocol` request header (a comma-separated list) offers batching.
pub fn offers_batch(header: Option<&str>) -> bool {
    header.is_some_and(|list| list.split(',').any(|protocol| protocol.trim() == BATCH_PROTOCOL))
}

/// What a socket carries through hibernation: the room's attachment, whether it batches, when
/// it last sent a frame (ms; see `idle`) and, for a Socket.IO client, its state. Kept as text
/// (see `fields`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketAttachment {
    pub member: Attachment,
    pub batch: bool,
    pub seen: u64,
    /// A Socket.IO client's state; `None` for a native socket.
    pub socketio: Option<SocketIoAttachment>,
}

impl SocketAttachment {
    pub fn encode(&self) -> String {
        let Attachment { id, nick, joined, client, identity, address, client_id, gone } = &self.member;
        let mut fields = Writer::default();
        fields.text(id).text(nick).number(*joined).number(client.bits()).identity(identity.as_ref());
        fields.optional_text(address.as_deref()).optional_text(client_id.as_deref()).flag(*gone);
        fields.flag(self.batch).number(self.seen);
        match &self.socketio {
            None => fields.absent(),
            Some(SocketIoAttachment { room, since, after, namespaces, refused_nick }) => {
                fields.present().text(room).optional_number(*since).optional_number(*after).number((*namespaces).into());
                fields.optional_text(refused_nick.as_deref())
            }
        };
        fields.finish()
    }

    /// The attachment `encode` wrote, or `None` for anything it could not have written.
    pub fn decode(text: &str) -> Option<SocketAttachment> {
        let mut fields = Reader::new(text);
        let member = Attachment {
            id: fields.text()?,
            nick: fields.text()?,
            joined: fields.number()?,
            client: ClientKey::from_bits(fields.number()?)?,
            identity: fields.identity()?,
            address: fields.optional_text()?,
            client_id: fields.optional_text()?,
            gone: fields.flag()?,
        };
        let (batch, seen) = (fields.flag()?, fields.number()?);
        let socketio = match fields.group()? {
            false => None,
            true => Some(SocketIoAttachment {
                room: fields.text()?,
                since: fields.optional_number()?,
                after: fields.optional_number()?,
                namespaces: fields.number()?.try_into().ok()?,
                refused_nick: fields.optional_text()?,
            }),
        };
        fields.finished().then_some(SocketAttachment { member, batch, seen, socketio })
    }
}

/// Frames to send together, in order, each serialised once.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    /// For sockets that did not opt in: each frame on its own.
    pub frames: Vec<String>,
    /// For sockets that opted in: `[frame,frame,...]`, or `None` for a single frame, which goes
    /// out as itself (never as an array of one).
    pub array: Option<String>,
}

impl Batch {
    fn of(frames: Vec<String>) -> Batch {
        let array = (frames.len() > 1).then(|| {
            let mut array = String::with_capacity(frames.iter().map(|f| f.len() + 1).sum::<usize>() + 1);
            array.push('[');
            for (i, frame) in frames.iter().enumerate() {
                if i > 0 {
                    array.push(',');
                }
                array.push_str(frame);
            }
            array.push(']');
            array
        });
        Batch { frames, array }
    }
}

/// Frames for every member; for each newcomer (in the order they joined) the frames produced
/// after its join, or `None` for none; and for each sender whose messages carry their `cid`
/// back to it, its own batch. After a delivery nobody is a newcomer any more.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery<H> {
    pub batch: Batch,
    pub newcomers: Vec<Option<Batch>>,
    pub personal: Vec<Personal<H>>,
}

/// The batch of one sender (`to`, the object's handle on its socket): everyone's frames, with
/// its own copies in place of its messages.
#[derive(Debug, PartialEq, Eq)]
pub struct Personal<H> {
    pub to: H,
    pub batch: Batch,
}

/// What the object does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<H> {
    /// Nothing to send now.
    Wait,
    /// Deliver now.
    Send(Delivery<H>),
    /// Deliver now, then ask for a tick after the queued events.
    SendAndTick(Delivery<H>),
}

/// A queued frame whose sender gets its own copy instead.
#[derive(Debug)]
struct Own<H> {
    /// The frame's place in the queue.
    at: usize,
    /// The sender's member id.
    owner: String,
    to: H,
    frame: String,
}

/// How many rooms of an isolate are in a busy spell: each room's `Outbox` counts itself in while
/// it is busy, and out when its spell ends or it is dropped. Shared by the rooms of one isolate (a
/// clone shares the count). A room lost mid-spell without a drop would only make the others' quiet
/// posts wait for a tick, never lose or reorder one.
#[derive(Debug, Default, Clone)]
pub struct BusyRooms(Rc<Cell<usize>>);

/// One room's frames on their way to its members. `H` is the object's handle on a socket.
#[derive(Debug)]
pub struct Outbox<H> {
    queue: Vec<String>,
    queued_bytes: usize,
    /// A tick has been asked for and not yet run. Changed only by `set_busy`.
    busy: bool,
    busy_rooms: BusyRooms,
    /// For each socket that joined since the last delivery, how many queued frames predate it.
    newcomers: Vec<usize>,
    own: Vec<Own<H>>,
}

impl<H> Default for Outbox<H> {
    /// An outbox counted in a `BusyRooms` of its own: the only room of its isolate.
    fn default() -> Self {
        Outbox::sharing(BusyRooms::default())
    }
}

impl<H> Drop for Outbox<H> {
    fn drop(&mut self) {
        self.set_busy(false);
    }
}

impl<H> Outbox<H> {
    /// An outbox counted in `busy_rooms`, the count of the rooms that share its isolate.
    pub fn sharing(busy_rooms: BusyRooms) -> Self {
        Outbox { queue: Vec::new(), queued_bytes: 0, busy: false, busy_rooms, newcomers: Vec::new(), own: Vec::new() }
    }

    fn set_busy(&mut self, busy: bool) {
        if busy != self.busy {
            let count = &self.busy_rooms.0;
            count.set(if busy { count.get() + 1 } else { count.get().saturating_sub(1) });
            self.busy = busy;
        }
    }

    /// Whether another room of the isolate is in a busy spell: the runtime is behind, and a post
    /// to this room, even quiet, should wait for a tick (see the module's comment).
    pub fn isolate_behind(&self) -> bool {
        self.busy_rooms.0.get() > usize::from(self.busy)
    }

    /// Whether a tick is coming: what is broadcast now waits for it (and a post may be held, see `held`).
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// Starts a busy spell without sending anything, so that what is pushed next waits to go out
    /// together; true when the room was quiet, and the object must ask for a tick (and flush now,
    /// unless the isolate is behind).
    pub fn begin_spell(&mut self) -> bool {
        let quiet = !self.busy;
        self.set_busy(true);
        quiet
    }

    /// A frame for every member (JSON, serialised once).
    pub fn push(&mut self, frame: String) -> Step<H> {
        if !self.busy {
            self.set_busy(true);
            // Not busy means the last tick delivered, so there are no newcomers.
            return Step::SendAndTick(Delivery { batch: Batch::of(vec![frame]), newcomers: Vec::new(), personal: Vec::new() });
        }
        self.queued_bytes += frame.len();
        self.queue.push(frame);
        if self.queue.len() >= MAX_BATCH_FRAMES || self.queued_bytes >= MAX_BATCH_BYTES {
            return self.flush().map_or(Step::Wait, Step::Send);
        }
        Step::Wait
    }

    /// A message for every member but its sender (member `owner`, socket `to`), which gets `own`
    /// (the same message with its `cid`) in its place, batched with the rest. The sender must not
    /// be a newcomer: the object sends a newcomer's own copy apart.
    pub fn push_own(&mut self, frame: String, owner: String, to: H, own: String) -> Step<H> {
        if !self.busy {
            self.set_busy(true);
            let personal = vec![Personal { to, batch: Batch::of(vec![own]) }];
            return Step::SendAndTick(Delivery { batch: Batch::of(vec![frame]), newcomers: Vec::new(), personal });
        }
        self.queued_bytes += own.len();
        self.own.push(Own { at: self.queue.len(), owner, to, frame: own });
        self.push(frame)
    }

    /// A socket joins: `announcement` (its `joined` frame) goes to every member but the new
    /// socket, which the object adds as the last newcomer.
    pub fn join(&mut self, announcement: String) -> Step<H> {
        let mut step = self.push(announcement);
        // Whether the frame went out or waits, the newcomer gets nothing up to and including it.
        match step {
            Step::Wait => self.newcomers.push(self.queue.len()),
            Step::Send(ref mut delivery) | Step::SendAndTick(ref mut delivery) => delivery.newcomers.push(None),
        }
        step
    }

    /// The tick asked for by `SendAndTick`: sends what piled up meanwhile and stays busy, or
    /// finds nothing and lets the next frame go out at once.
    pub fn tick(&mut self) -> Step<H> {
        match self.flush() {
            Some(delivery) => Step::SendAndTick(delivery),
            None => {
                self.set_busy(false);
                Step::Wait
            }
        }
    }

    /// Everything queued, now: before a socket is sent a reply of its own, so that it still
    /// sees frames in the order the room produced them. The tick still comes. `None` when
    /// nothing is queued; newcomers are then plain members (the object forgets them too).
    pub fn flush(&mut self) -> Option<Delivery<H>> {
        let offsets = std::mem::take(&mut self.newcomers);
        if self.queue.is_empty() {
            return None;
        }
        self.queued_bytes = 0;
        let frames = std::mem::take(&mut self.queue);
        let newcomers = offsets
            .into_iter()
            .map(|from| (from < frames.len()).then(|| Batch::of(frames[from..].to_vec())))
            .collect();
        // Each sender's batch: everyone's frames with its own copies in place, built once per sender.
        let mut senders: Vec<(String, H, Vec<String>)> = Vec::new();
        for Own { at, owner, to, frame } in std::mem::take(&mut self.own) {
            match senders.iter_mut().find(|(id, ..)| *id == owner) {
                Some((_, _, own)) => own[at] = frame,
                None => {
                    let mut own = frames.clone();
                    own[at] = frame;
                    senders.push((owner, to, own));
                }
            }
        }
        let personal = senders.into_iter().map(|(_, to, frames)| Personal { to, batch: Batch::of(frames) }).collect();
        Some(Delivery { batch: Batch::of(frames), newcomers, personal })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::identity::{Identity, Role};

    /// Sockets are named by their member id in these tests.
    type Outbox = super::Outbox<&'static str>;
    type Delivery = super::Delivery<&'static str>;
    type Step = super::Step<&'static str>;

    fn frame(n: usize) -> String {
        format!(r#"{{"type":"message","id":{n}}}"#)
    }

    fn batch(step: Step) -> Batch {
        delivery(step).batch
    }

    fn delivery(step: Step) -> Delivery {
        match step {
            Step::Send(delivery) | Step::SendAndTick(delivery) => delivery,
            Step::Wait => panic!("expected a delivery"),
        }
    }

    fn single(frame: String) -> Batch {
        Batch { frames: vec![frame], array: None }
    }

    #[test]
    fn the_subprotocol_is_found_in_the_offered_list() {
        assert!(offers_batch(Some("edge-chat.batch")));
        assert!(offers_batch(Some("chat, edge-chat.batch ,x")));
        assert!(!offers_batch(Some("edge-chat.batched")));
        assert!(!offers_batch(Some("Edge-Chat.Batch")), "subprotocol names are case-sensitive");
        assert!(!offers_batch(Some("")));
        assert!(!offers_batch(None));
    }

    #[test]
    fn a_quiet_room_sends_each_frame_at_once_alone() {
        let mut outbox = Outbox::default();
        for n in 0..3 {
            let alone = Delivery { batch: single(frame(n)), newcomers: vec![], personal: vec![] };
            assert_eq!(outbox.push(frame(n)), Step::SendAndTick(alone));
            assert_eq!(outbox.tick(), Step::Wait, "nothing piled up: the spell ends");
        }
    }

    #[test]
    fn frames_that_pile_up_go_out_as_one_array_in_order() {
        let mut outbox = Outbox::default();
        assert!(matches!(outbox.push(frame(0)), Step::SendAndTick(_)));
        for n in 1..4 {
            assert_eq!(outbox.push(frame(n)), Step::Wait);
        }
        let first = batch(outbox.tick());
        assert_eq!(first.frames, [frame(1), frame(2), frame(3)]);
        let array: Vec<serde_json::Value> = serde_json::from_str(first.array.as_deref().unwrap()).unwrap();
        assert_eq!(array.iter().map(|v| v["id"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
        // Still busy after a batch: the next frame waits for the next tick.
        assert_eq!(outbox.push(frame(4)), Step::Wait);
        assert_eq!(outbox.tick(), Step::SendAndTick(Delivery { batch: single(frame(4)), newcomers: vec![], personal: vec![] }));
        assert_eq!(outbox.tick(), Step::Wait);
        assert!(matches!(outbox.push(frame(5)), Step::SendAndTick(_)));
    }

    #[test]
    fn a_spell_begun_without_a_frame_gathers_what_follows_into_one_batch() {
        let mut outbox = Outbox::default();
        assert!(outbox.begin_spell(), "a quiet room: the caller flushes and asks for a tick");
        for n in 0..3 {
            assert_eq!(outbox.push(frame(n)), Step::Wait);
        }
        assert_eq!(outbox.flush().unwrap().batch.frames, [frame(0), frame(1), frame(2)]);
        assert!(!outbox.begin_spell(), "already busy: the tick that is coming sends what follows");
        assert_eq!(outbox.tick(), Step::Wait);
        assert!(matches!(outbox.push(frame(3)), Step::SendAndTick(_)), "the spell ended");
    }

    #[test]
    fn a_room_is_behind_while_another_room_of_its_isolate_is_busy() {
        let isolate = BusyRooms::default();
        let (mut busy, mut quiet) = (Outbox::sharing(isolate.clone()), Outbox::sharing(isolate.clone()));
        assert!(!busy.isolate_behind() && !quiet.isolate_behind(), "nobody is busy");
        assert!(matches!(busy.push(frame(0)), Step::SendAndTick(_)));
        assert!(!busy.isolate_behind(), "its own spell does not count");
        assert!(quiet.isolate_behind(), "another room's spell does");
        assert!(quiet.begin_spell(), "the quiet room begins a spell of its own, to wait for its tick");
        assert!(busy.isolate_behind() && quiet.isolate_behind());
        assert_eq!(busy.tick(), Step::Wait, "the first room's spell ends");
        assert!(!quiet.isolate_behind() && busy.isolate_behind());
        assert_eq!(quiet.tick(), Step::Wait);
        assert!(!busy.isolate_behind() && !quiet.isolate_behind());
        assert!(matches!(quiet.push(frame(1)), Step::SendAndTick(_)), "quiet again: at once");
        drop(quiet);
        assert!(!busy.isolate_behind(), "a room that goes away while busy leaves the count");
        assert!(!Outbox::default().isolate_behind(), "a room alone is never behind");
    }

    #[test]
    fn batches_are_bounded_in_frames_and_bytes() {
        let mut outbox = Outbox::default();
        outbox.push(frame(0));
        for n in 1..MAX_BATCH_FRAMES {
            assert_eq!(outbox.push(frame(n)), Step::Wait);
        }
        match outbox.push(frame(MAX_BATCH_FRAMES)) {
            Step::Send(delivery) => assert_eq!(delivery.batch.frames.len(), MAX_BATCH_FRAMES),
            other => panic!("{other:?}"),
        }
        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        assert_eq!(outbox.push(big.clone()), Step::Wait);
        assert!(matches!(outbox.push(big), Step::Send(d) if d.batch.frames.len() == 2));
        assert_eq!(outbox.tick(), Step::Wait);
    }

    #[test]
    fn flush_empties_the_queue_and_keeps_the_tick() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.flush(), None);
        outbox.push(frame(0));
        outbox.push(frame(1));
        outbox.push(frame(2));
        assert_eq!(outbox.flush().unwrap().batch.frames, [frame(1), frame(2)]);
        assert_eq!(outbox.push(frame(3)), Step::Wait, "still busy until the tick");
        assert_eq!(batch(outbox.tick()).frames, [frame(3)]);
    }

    #[test]
    fn joins_in_a_storm_are_batched_and_newcomers_get_only_later_frames() {
        let mut outbox = Outbox::default();
        // A quiet room: the first join is announced at once, and its socket gets nothing of it.
        let announced = Delivery { batch: single(frame(0)), newcomers: vec![None], personal: vec![] };
        assert_eq!(outbox.join(frame(0)), Step::SendAndTick(announced));
        // Three more join before the tick, then a message is posted.
        for n in 1..4 {
            assert_eq!(outbox.join(frame(n)), Step::Wait);
        }
        assert_eq!(outbox.push(frame(4)), Step::Wait);
        let tick = delivery(outbox.tick());
        assert_eq!(tick.batch.frames, [frame(1), frame(2), frame(3), frame(4)]);
        let got: Vec<Vec<String>> = tick.newcomers.into_iter().map(|b| b.map_or(vec![], |b| b.frames)).collect();
        assert_eq!(got, [vec![frame(2), frame(3), frame(4)], vec![frame(3), frame(4)], vec![frame(4)]]);
        // Delivered: nobody is a newcomer any more.
        assert_eq!(outbox.push(frame(5)), Step::Wait);
        assert_eq!(delivery(outbox.tick()).newcomers, vec![]);
    }

    #[test]
    fn a_newcomer_after_the_last_queued_frame_gets_nothing_and_then_everything() {
        let mut outbox = Outbox::default();
        outbox.push(frame(0));
        outbox.push(frame(1));
        assert_eq!(outbox.join(frame(2)), Step::Wait);
        // A bound reached by the join itself: the newcomer is in the delivery, with nothing.
        let mut outbox_full = Outbox::default();
        outbox_full.push(frame(0));
        for n in 1..MAX_BATCH_FRAMES {
            outbox_full.push(frame(n));
        }
        assert_eq!(delivery(outbox_full.join(frame(99))).newcomers, vec![None]);
        // A flush with nothing queued forgets newcomers: later frames go to everyone.
        let mut quiet = Outbox::default();
        quiet.push(frame(0));
        assert_eq!(quiet.join(frame(1)), Step::Wait);
        assert_eq!(delivery(quiet.tick()).newcomers, vec![None]);
        assert_eq!(quiet.tick(), Step::Wait);
        assert_eq!(delivery(quiet.push(frame(2))).newcomers, vec![]);
    }

    #[test]
    fn a_sender_gets_its_own_copies_in_its_batch_and_everyone_else_the_shared_one() {
        let mut outbox = Outbox::default();
        outbox.push(frame(0));
        let own = |n: usize| format!(r#"{{"type":"message","id":{n},"cid":"c{n}"}}"#);
        assert_eq!(outbox.push_own(frame(1), "ann".into(), "ann-socket", own(1)), Step::Wait);
        assert_eq!(outbox.push(frame(2)), Step::Wait);
        assert_eq!(outbox.push_own(frame(3), "bob".into(), "bob-socket", own(3)), Step::Wait);
        assert_eq!(outbox.push_own(frame(4), "ann".into(), "ann-socket", own(4)), Step::Wait);
        let tick = delivery(outbox.tick());
        assert_eq!(tick.batch.frames, [frame(1), frame(2), frame(3), frame(4)], "nobody else sees a cid");
        let personal: Vec<(&str, Vec<String>)> = tick.personal.into_iter().map(|p| (p.to, p.batch.frames)).collect();
        assert_eq!(
            personal,
            [("ann-socket", vec![own(1), frame(2), frame(3), own(4)]), ("bob-socket", vec![frame(1), frame(2), own(3), frame(4)])]
        );
        assert_eq!(outbox.push(frame(5)), Step::Wait);
        assert_eq!(delivery(outbox.tick()).personal, vec![], "delivered: the next batch is everyone's");
        // A quiet room sends a sender's copy at once, alone.
        assert_eq!(outbox.tick(), Step::Wait);
        let quiet = delivery(outbox.push_own(frame(6), "ann".into(), "ann-socket", own(6)));
        assert_eq!(quiet.personal, vec![Personal { to: "ann-socket", batch: single(own(6)) }]);
    }

    #[test]
    fn attachments_carry_the_opt_in_the_last_frame_and_socket_io_state_as_text() {
        let member = Attachment {
            id: "a".into(),
            nick: "Ann, the \"first\" ~ 100% +1 é 日本".into(),
            joined: 5,
            client: ClientKey::of("192.0.2.1", [7, 7]),
            identity: None,
            address: Some("k".into()),
            client_id: Some("c-1".into()),
            gone: false,
        };
        let batched = SocketAttachment { member: member.clone(), batch: true, seen: 9, socketio: None };
        let text = batched.encode();
        assert!(text.bytes().all(|b| b.is_ascii_graphic()) && !text.contains("192.0.2.1"), "{text}");
        assert_eq!(SocketAttachment::decode(&text), Some(batched));
        let identity = Some(Identity { id: "u,1".into(), name: "Ann".into(), role: Role::Readonly, expires_at: 1 << 60 });
        let refused_nick = Some(String::new());
        let socketio = Some(SocketIoAttachment { room: "r".into(), since: None, after: Some(3), namespaces: 2, refused_nick });
        let sio = SocketAttachment { member: Attachment { identity, gone: true, ..member }, batch: false, seen: 7, socketio };
        assert_eq!(SocketAttachment::decode(&sio.encode()), Some(sio.clone()));
        let text = sio.encode();
        for broken in [&text[..text.len() - 2], &format!("{text},1"), "", "a,Ann,5"] {
            assert_eq!(SocketAttachment::decode(broken), None, "{broken}");
        }
    }
}
