//! Rate limiting: a token bucket holding `burst` messages that refills at `per_second` (kept
//! in millitokens so that the arithmetic is exact integers), used per socket, per client and
//! per room; and a sliding window that counts joins per client.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_second: u32,
}

impl RateLimit {
    pub const DEFAULT: RateLimit = RateLimit { burst: 20, per_second: 5 };
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    millitokens: u64,
    updated_at_ms: u64,
}

impl TokenBucket {
    pub fn full(limit: RateLimit, now_ms: u64) -> Self {
        TokenBucket { millitokens: capacity(limit), updated_at_ms: now_ms }
    }

    /// Takes one token if there is one. A clock that goes backwards refills nothing.
    pub fn try_take(&mut self, limit: RateLimit, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.updated_at_ms);
        self.updated_at_ms = self.updated_at_ms.max(now_ms);
        let refill = elapsed.saturating_mul(u64::from(limit.per_second));
        self.millitokens = self.millitokens.saturating_add(refill).min(capacity(limit));
        if self.millitokens >= 1000 {
            self.millitokens -= 1000;
            true
        } else {
            false
        }
    }
}

impl TokenBucket {
    /// Whether the bucket would be full again at `now_ms`: then forgetting it changes nothing.
    pub fn is_full_at(&self, limit: RateLimit, now_ms: u64) -> bool {
        let refill = now_ms.saturating_sub(self.updated_at_ms).saturating_mul(u64::from(limit.per_second));
        self.millitokens.saturating_add(refill) >= capacity(limit)
    }
}

/// The span a `SlidingWindow` counts over.
pub const WINDOW_MS: u64 = 10_000;

/// Admits at most `limit` events in any `WINDOW_MS`, estimated the sliding-window way with two
/// counters: the previous window's count, weighted by how much of it the last `WINDOW_MS`
/// still covers, plus the current window's. Constant memory whatever the limit.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    started_at_ms: u64,
    current: u32,
    previous: u32,
}

impl SlidingWindow {
    pub fn new(now_ms: u64) -> Self {
        SlidingWindow { started_at_ms: now_ms - now_ms % WINDOW_MS, current: 0, previous: 0 }
    }

    /// Counts one event if the window has room for it. A clock that goes backwards counts
    /// against the current window.
    pub fn try_count(&mut self, limit: u32, now_ms: u64) -> bool {
        let window = now_ms - now_ms % WINDOW_MS;
        if window >= self.started_at_ms + 2 * WINDOW_MS {
            *self = SlidingWindow { started_at_ms: window, current: 0, previous: 0 };
        } else if window >= self.started_at_ms + WINDOW_MS {
            *self = SlidingWindow { started_at_ms: window, current: 0, previous: self.current };
        }
        let into_current = now_ms.saturating_sub(self.started_at_ms).min(WINDOW_MS);
        let previous = u64::from(self.previous) * (WINDOW_MS - into_current) / WINDOW_MS;
        if previous + u64::from(self.current) >= u64::from(limit) {
            return false;
        }
        self.current += 1;
        true
    }

    /// Whether the window has forgotten every event by `now_ms`.
    pub fn is_empty_at(&self, now_ms: u64) -> bool {
        now_ms >= self.started_at_ms + 2 * WINDOW_MS || (self.current == 0 && self.previous == 0)
    }
}

fn capacity(limit: RateLimit) -> u64 {
    u64::from(limit.burst) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken_in_a_row(bucket: &mut TokenBucket, limit: RateLimit, now: u64) -> usize {
        (0..1000).take_while(|_| bucket.try_take(limit, now)).count()
    }

    #[test]
    fn burst_then_steady_rate() {
        let limit = RateLimit::DEFAULT;
        let mut bucket = TokenBucket::full(limit, 0);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 0), 20);
        assert!(!bucket.try_take(limit, 199), "a token takes 200 ms at 5 per second");
        assert!(bucket.try_take(limit, 200));
        assert_eq!(taken_in_a_row(&mut bucket, limit, 1200), 5);
    }

    #[test]
    fn refill_never_exceeds_the_burst() {
        let limit = RateLimit::DEFAULT;
        let mut bucket = TokenBucket::full(limit, 0);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 0), 20);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 3_600_000), 20);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let limit = RateLimit::DEFAULT;
        let mut bucket = TokenBucket::full(limit, 10_000);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 10_000), 20);
        assert!(!bucket.try_take(limit, 0));
        assert!(!bucket.try_take(limit, 10_000));
    }

    #[test]
    fn a_bucket_knows_when_it_is_full_again() {
        let limit = RateLimit::DEFAULT;
        let mut bucket = TokenBucket::full(limit, 0);
        assert!(bucket.is_full_at(limit, 0));
        assert!(bucket.try_take(limit, 0));
        assert!(!bucket.is_full_at(limit, 199));
        assert!(bucket.is_full_at(limit, 200));
    }

    #[test]
    fn the_window_admits_the_limit_then_refuses() {
        let mut window = SlidingWindow::new(1_000);
        assert_eq!((0..100).filter(|_| window.try_count(10, 1_000)).count(), 10);
        assert!(!window.try_count(10, 9_999));
    }

    #[test]
    fn the_previous_window_fades_out_over_the_next() {
        let mut window = SlidingWindow::new(0);
        assert_eq!((0..10).filter(|_| window.try_count(10, 9_000)).count(), 10);
        // Half-way into the next window, half of the previous ten still count.
        assert_eq!((0..100).filter(|_| window.try_count(10, 15_000)).count(), 5);
        assert!(!window.is_empty_at(19_999));
        assert!(window.is_empty_at(30_000));
        assert_eq!((0..100).filter(|_| window.try_count(10, 30_000)).count(), 10);
    }

    #[test]
    fn the_window_never_admits_more_than_the_limit_in_any_span() {
        let mut window = SlidingWindow::new(0);
        let admitted: Vec<u64> = (0..100_000u64).step_by(97).filter(|&now| window.try_count(7, now)).collect();
        for (i, &at) in admitted.iter().enumerate() {
            let in_span = admitted[i..].iter().take_while(|&&later| later < at + WINDOW_MS).count();
            assert!(in_span <= 7 + 1, "{in_span} admitted within 10 s of {at}");
        }
        assert!(admitted.len() >= 60, "and close to 7 per 10 s over 100 s: {}", admitted.len());
    }

    #[test]
    fn a_clock_going_backwards_counts_against_the_current_window() {
        let mut window = SlidingWindow::new(50_000);
        assert_eq!((0..10).filter(|_| window.try_count(3, 50_000)).count(), 3);
        assert!(!window.try_count(3, 0));
    }

    #[test]
    fn configured_limits_apply() {
        let limit = RateLimit { burst: 3, per_second: 1000 };
        let mut bucket = TokenBucket::full(limit, 0);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 0), 3);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 1), 1);
    }
}
