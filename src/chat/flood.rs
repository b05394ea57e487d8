//! When a socket over its rate limit is cut off. A socket that sends faster than its bucket
//! refills gets `rate_limited` for each frame dropped and stays open: a person who pastes a long
//! text into `websocat` sends many lines at once, once. Only a socket that keeps flooding over
//! time is closed (1008): one still over its limit `FLOOD_SECONDS` after its first dropped frame,
//! or one that has had `FLOOD_DROPPED_BURSTS` times its burst dropped. A spell of flooding ends
//! once the socket has held back long enough for its bucket to be full again.

use crate::chat::rate_limit::{RateLimit, TokenBucket};

/// A socket still over its limit this long after its first dropped frame is closed.
pub const FLOOD_SECONDS: u64 = 5;
/// A socket that has had this many times its burst dropped in one spell is closed, however fast.
pub const FLOOD_DROPPED_BURSTS: u64 = 5;

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Dropped: the sender gets `rate_limited` and stays open.
    Drop,
    /// Dropped, and the sender is closed for flooding.
    Close,
}

/// One socket's rate limit and its current spell of dropped frames, if any.
#[derive(Debug, Clone)]
pub struct FloodGuard {
    bucket: TokenBucket,
    /// When the current spell's first frame was dropped.
    since: Option<u64>,
    dropped: u64,
}

impl FloodGuard {
    pub fn new(limit: RateLimit, now: u64) -> Self {
        FloodGuard { bucket: TokenBucket::full(limit, now), since: None, dropped: 0 }
    }

    /// Judges one frame arriving at `now`.
    pub fn frame(&mut self, limit: RateLimit, now: u64) -> Verdict {
        if self.since.is_some() && self.bucket.is_full_at(limit, now) {
            self.since = None;
            self.dropped = 0;
        }
        if self.bucket.try_take(limit, now) {
            return Verdict::Pass;
        }
        let since = *self.since.get_or_insert(now);
        self.dropped += 1;
        let too_many = self.dropped >= FLOOD_DROPPED_BURSTS * u64::from(limit.burst);
        let too_long = now.saturating_sub(since) >= FLOOD_SECONDS * 1000;
        if too_many || too_long {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit::DEFAULT;

    /// Sends `count` frames at `now`, returning how many of each verdict.
    fn send(guard: &mut FloodGuard, count: usize, now: u64) -> (usize, usize, usize) {
        let verdicts: Vec<Verdict> = (0..count).map(|_| guard.frame(LIMIT, now)).collect();
        let n = |v| verdicts.iter().filter(|&&x| x == v).count();
        (n(Verdict::Pass), n(Verdict::Drop), n(Verdict::Close))
    }

    #[test]
    fn pasting_thirty_lines_drops_ten_and_keeps_the_socket() {
        let mut guard = FloodGuard::new(LIMIT, 0);
        assert_eq!(send(&mut guard, 30, 1_000), (20, 10, 0));
        // The person reads for a while, then pastes again: a fresh spell.
        assert_eq!(send(&mut guard, 30, 5_000), (20, 10, 0));
        assert_eq!(send(&mut guard, 30, 9_000), (20, 10, 0));
    }

    #[test]
    fn a_long_paste_once_is_dropped_but_not_closed() {
        let mut guard = FloodGuard::new(LIMIT, 0);
        let burst = LIMIT.burst as usize;
        let dropped = FLOOD_DROPPED_BURSTS as usize * burst - 1;
        assert_eq!(send(&mut guard, burst + dropped, 0), (burst, dropped, 0));
    }

    #[test]
    fn several_bursts_dropped_close_the_socket_however_fast() {
        let mut guard = FloodGuard::new(LIMIT, 0);
        let burst = LIMIT.burst as usize;
        let dropped = FLOOD_DROPPED_BURSTS as usize * burst;
        assert_eq!(send(&mut guard, burst + dropped, 0), (burst, dropped - 1, 1));
    }

    #[test]
    fn still_over_the_limit_after_flood_seconds_closes_the_socket() {
        // Ten frames a second against a refill of five: a drop every other frame.
        let mut guard = FloodGuard::new(LIMIT, 0);
        let mut first_drop = None;
        for n in 0..10_000u64 {
            let now = n * 100;
            match guard.frame(LIMIT, now) {
                Verdict::Pass => {}
                Verdict::Drop => {
                    first_drop.get_or_insert(now);
                }
                Verdict::Close => {
                    let since = first_drop.expect("dropped before closed");
                    assert_eq!(now - since, FLOOD_SECONDS * 1000, "closed at the first drop {FLOOD_SECONDS} s in");
                    return;
                }
            }
        }
        panic!("never closed");
    }

    #[test]
    fn only_holding_back_until_the_bucket_is_full_ends_a_spell() {
        // Rested: 4 s refill the burst of 20 at 5 a second, so a drop at 5 s starts a new spell.
        let mut rested = FloodGuard::new(LIMIT, 0);
        assert_eq!(send(&mut rested, 21, 0), (20, 1, 0));
        assert_eq!(send(&mut rested, 21, 5_000), (20, 1, 0));
        // Never rested: it spent what came back at 3.999 s, so the spell begun at 0 goes on.
        let mut busy = FloodGuard::new(LIMIT, 0);
        assert_eq!(send(&mut busy, 21, 0), (20, 1, 0));
        assert_eq!(send(&mut busy, 21, 3_999), (19, 2, 0));
        assert_eq!(send(&mut busy, 7, 5_000), (6, 0, 1), "still over the limit 5 s after the first drop");
    }

    #[test]
    fn a_huge_burst_does_not_overflow() {
        let limit = RateLimit { burst: u32::MAX, per_second: u32::MAX };
        let mut guard = FloodGuard::new(limit, 0);
        assert_eq!(guard.frame(limit, u64::MAX), Verdict::Pass);
    }
}
