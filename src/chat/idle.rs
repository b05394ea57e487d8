//! No ghosts: a socket that has sent neither a frame nor a `ping` for `IDLE_TIMEOUT_S` is a
//! connection that died without telling anyone (a laptop closed, a network gone), and is closed
//! (1001, "idle") with its `left` announced. Rules only; the Durable Object asks the runtime when
//! each socket last had a `ping` auto-answered (`getWebSocketAutoResponseTimestamp`).
//!
//! What the room knows of each socket's frames lives in memory, and goes into its attachment at
//! most once per `write_interval`, so that a hibernated room still knows after waking: writing an
//! attachment serialises it, which is not worth doing for every frame. So after a wake a socket's
//! last frame is taken to be as late as it could have been (its attachment's time plus one
//! interval): the sweep may close it up to that much late, never early.
//!
//! When it is checked: whenever the room is awake anyway and a socket could have gone idle since
//! the last check (`sweep_due`), and by the room's alarm, which stands while the room has members
//! and comes at most once every `IDLE_TIMEOUT_S` (`alarm_need`). A ghost is therefore closed
//! after between one and two timeouts of silence in a room where nothing else happens, and after
//! about one (up to a tenth more) in a room that is awake. An empty room needs no alarm.

use crate::chat::room::SocketId;
use std::collections::HashMap;

pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 75_000;

/// The close code and reason of an idle socket: "going away".
pub const IDLE_CLOSE_CODE: u16 = 1001;
pub const IDLE_CLOSE_REASON: &str = "idle";

/// A socket's last frame, and when its attachment last recorded one.
#[derive(Debug, Clone, Copy)]
struct Seen {
    frame_at: u64,
    written_at: u64,
}

/// The room's knowledge of when each socket last showed a sign of life.
#[derive(Debug)]
pub struct Liveness {
    timeout_ms: u64,
    sockets: HashMap<SocketId, Seen>,
    /// No socket can be idle before this: the earliest deadline found by the last sweep.
    next_sweep_at: u64,
}

impl Liveness {
    pub fn new(timeout_ms: u64) -> Self {
        // No socket yet, so none to sweep: a new room's first join does not sweep (nor a wake
        // without sockets); `joined` and `restored` bring the sweep forward.
        Liveness { timeout_ms: timeout_ms.max(1), sockets: HashMap::new(), next_sweep_at: u64::MAX }
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// How often at most a socket's attachment is rewritten for its frames: a fifth of the
    /// timeout, between 1 and 15 s.
    pub fn write_interval(&self) -> u64 {
        (self.timeout_ms / 5).clamp(1_000, 15_000)
    }

    /// A socket joined at `now` (its attachment was written with `now`).
    pub fn joined(&mut self, id: &str, now: u64) {
        self.sockets.insert(id.to_owned(), Seen { frame_at: now, written_at: now });
        self.next_sweep_at = self.next_sweep_at.min(now + self.timeout_ms);
    }

    /// A socket taken back after a wake, whose attachment says it was last seen at `seen`: its
    /// last frame may have come up to one write interval later, but not after `now`. The next
    /// event sweeps, since the room does not know what happened while it hibernated.
    pub fn restored(&mut self, id: &str, seen: u64, now: u64) {
        let frame_at = seen.saturating_add(self.write_interval()).min(now).max(seen);
        self.sockets.insert(id.to_owned(), Seen { frame_at, written_at: seen });
        self.next_sweep_at = 0;
    }

    /// A frame from `id` at `now`. True when its attachment should be rewritten now to record
    /// it (see `seen`): at most once per write interval.
    pub fn frame(&mut self, id: &str, now: u64) -> bool {
        let interval = self.write_interval();
        match self.sockets.get_mut(id) {
            Some(seen) => {
                seen.frame_at = seen.frame_at.max(now);
                if now >= seen.written_at.saturating_add(interval) {
                    seen.written_at = now;
                    return true;
                }
                false
            }
            None => {
                self.sockets.insert(id.to_owned(), Seen { frame_at: now, written_at: 0 });
                true
            }
        }
    }

    /// The time an attachment written now records for `id`: its last frame, or `now` for a
    /// socket the room has no record of.
    pub fn seen(&mut self, id: &str, now: u64) -> u64 {
        match self.sockets.get_mut(id) {
            Some(seen) => {
                seen.written_at = seen.written_at.max(seen.frame_at);
                seen.frame_at
            }
            None => now,
        }
    }

    /// Whether a socket could have gone idle since the last sweep.
    pub fn sweep_due(&self, now: u64) -> bool {
        now >= self.next_sweep_at
    }

    /// Checks every member (`members`: each socket with its id) and returns those idle at `now`,
    /// in the order given. `last_ping` tells when a socket last had a `ping` auto-answered; it is
    /// asked only of sockets without a recent frame. Sockets no longer given are forgotten. The
    /// next sweep is due at the earliest deadline found, but not sooner than a tenth of the
    /// timeout from now, so that a busy room does not sweep on every frame.
    pub fn sweep<S>(
        &mut self,
        now: u64,
        members: impl IntoIterator<Item = (S, SocketId)>,
        mut last_ping: impl FnMut(&S) -> Option<u64>,
    ) -> Vec<(S, SocketId)> {
        let mut kept = HashMap::with_capacity(self.sockets.len());
        let mut idle = Vec::new();
        let mut next = u64::MAX;
        for (socket, id) in members {
            // A socket the room has no record of is as fresh as it can be.
            let seen = self.sockets.get(&id).copied().unwrap_or(Seen { frame_at: now, written_at: now });
            let mut last = seen.frame_at;
            if now >= last.saturating_add(self.timeout_ms) {
                last = last.max(last_ping(&socket).unwrap_or(0));
            }
            let deadline = last.saturating_add(self.timeout_ms);
            if now >= deadline {
                idle.push((socket, id));
            } else {
                next = next.min(deadline);
                kept.insert(id, seen);
            }
        }
        self.sockets = kept;
        self.next_sweep_at = next.max(now + self.timeout_ms / 10);
        idle
    }

    /// When the idle check next needs the alarm: one timeout from `now` while the room has
    /// members (the alarm then sweeps and asks again), never for an empty room. Asked when the
    /// room gains its first member and after each alarm, so it comes at most once per timeout.
    pub fn alarm_need(&self, occupied: bool, now: u64) -> Option<u64> {
        occupied.then(|| now.saturating_add(self.timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 75_000;

    fn ids(idle: Vec<(&'static str, SocketId)>) -> Vec<&'static str> {
        idle.into_iter().map(|(socket, _)| socket).collect()
    }

    fn members(names: &[&'static str]) -> Vec<(&'static str, SocketId)> {
        names.iter().map(|&name| (name, name.to_owned())).collect()
    }

    #[test]
    fn a_room_without_sockets_is_never_due_for_a_sweep() {
        assert!(!Liveness::new(T).sweep_due(u64::MAX - 1));
    }

    #[test]
    fn a_socket_silent_for_the_timeout_is_idle_and_a_ping_or_frame_keeps_it() {
        let mut live = Liveness::new(T);
        for id in ["ghost", "pinger", "talker"] {
            live.joined(id, 0);
        }
        live.frame("talker", 50_000);
        let pings = |socket: &&str| match *socket {
            "pinger" => Some(60_000),
            _ => None,
        };
        assert!(!live.sweep_due(T - 1) && live.sweep_due(T), "no one can be idle before the joins' deadline");
        assert_eq!(ids(live.sweep(T - 1, members(&["ghost", "pinger", "talker"]), pings)), Vec::<&str>::new());
        // The ghost's deadline is T, but the last sweep was just now: the next waits a tenth.
        let next = T - 1 + T / 10;
        assert!(!live.sweep_due(next - 1) && live.sweep_due(next));
        assert_eq!(ids(live.sweep(next, members(&["ghost", "pinger", "talker"]), pings)), ["ghost"]);
        // Next due at the talker's deadline, 50 s + T.
        assert!(!live.sweep_due(50_000 + T - 1) && live.sweep_due(50_000 + T));
        assert_eq!(ids(live.sweep(50_000 + T, members(&["pinger", "talker"]), pings)), ["talker"]);
        assert_eq!(ids(live.sweep(60_000 + T, members(&["pinger"]), pings)), ["pinger"]);
    }

    #[test]
    fn pings_are_asked_only_of_sockets_without_a_recent_frame() {
        let mut live = Liveness::new(T);
        live.joined("a", 0);
        live.joined("b", 0);
        live.frame("a", 10_000);
        let mut asked = Vec::new();
        live.sweep(T + 5_000, members(&["a", "b"]), |socket| {
            asked.push(*socket);
            Some(T)
        });
        assert_eq!(asked, ["b"]);
    }

    #[test]
    fn a_busy_room_sweeps_at_most_every_tenth_of_the_timeout() {
        let mut live = Liveness::new(T);
        live.joined("a", 0);
        // A deadline 1 ms away still waits a tenth of the timeout.
        let now = 100_000;
        assert!(live.sweep(now, members(&["a"]), |_| Some(now - T + 1)).is_empty());
        assert!(!live.sweep_due(now + T / 10 - 1));
        assert!(live.sweep_due(now + T / 10));
    }

    #[test]
    fn attachments_are_rewritten_at_most_once_per_interval() {
        let mut live = Liveness::new(T);
        assert_eq!(live.write_interval(), 15_000);
        live.joined("a", 0);
        let writes: Vec<u64> = (1..=60).map(|s| s * 1_000).filter(|&now| live.frame("a", now)).collect();
        assert_eq!(writes, [15_000, 30_000, 45_000, 60_000]);
        assert_eq!(Liveness::new(3_000).write_interval(), 1_000);
        assert_eq!(Liveness::new(20_000).write_interval(), 4_000);
    }

    #[test]
    fn after_a_wake_a_socket_is_never_closed_early() {
        // Its last frame came 14 s after its attachment's record, which a wake cannot know.
        let mut before = Liveness::new(T);
        before.joined("a", 0);
        assert!(!before.frame("a", 14_000));
        let mut after = Liveness::new(T);
        after.restored("a", 0, 30_000);
        assert!(after.sweep_due(30_000), "a wake sweeps on its first event");
        assert!(after.sweep(14_000 + T - 1, members(&["a"]), |_| None).is_empty());
        assert_eq!(ids(after.sweep(15_000 + T, members(&["a"]), |_| None)), ["a"], "at most one interval late");
        // A record newer than the interval before `now` is taken as it is, never in the future.
        let mut fresh = Liveness::new(T);
        fresh.restored("b", 29_000, 30_000);
        assert!(fresh.sweep(30_000 + T - 1, members(&["b"]), |_| None).is_empty());
        assert_eq!(ids(fresh.sweep(30_000 + T, members(&["b"]), |_| None)), ["b"]);
    }

    #[test]
    fn the_attachment_records_the_last_frame() {
        let mut live = Liveness::new(T);
        live.joined("a", 0);
        live.frame("a", 4_000);
        assert_eq!(live.seen("a", 5_000), 4_000);
        assert!(!live.frame("a", 6_000), "just written");
        assert_eq!(live.seen("unknown", 5_000), 5_000);
    }

    #[test]
    fn departed_sockets_are_forgotten_by_the_next_sweep() {
        let mut live = Liveness::new(T);
        live.joined("gone", 0);
        live.joined("here", 0);
        live.sweep(1, members(&["here"]), |_| None);
        assert_eq!(live.sockets.len(), 1);
        assert!(live.sockets.contains_key("here"));
    }

    #[test]
    fn the_alarm_is_needed_only_by_an_occupied_room_once_per_timeout() {
        let live = Liveness::new(T);
        assert_eq!(live.alarm_need(false, 1_000), None, "an empty room is never woken");
        assert_eq!(live.alarm_need(true, 1_000), Some(1_000 + T));
        assert_eq!(live.alarm_need(true, u64::MAX), Some(u64::MAX));
        // In a silent room each alarm asks for the next: 86,400 / 75 = 1,152 wakes a day at most.
        let (mut at, mut wakes) = (0, 0);
        while let Some(next) = live.alarm_need(true, at).filter(|&next| next <= 86_400_000) {
            at = next;
            wakes += 1;
        }
        assert_eq!(wakes, 1_152);
    }
}
