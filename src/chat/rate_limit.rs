//! Per-socket rate limiting: a token bucket holding `burst` messages that refills at
//! `per_second`. Kept in millitokens so that the arithmetic is exact integers.

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
    fn configured_limits_apply() {
        let limit = RateLimit { burst: 3, per_second: 1000 };
        let mut bucket = TokenBucket::full(limit, 0);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 0), 3);
        assert_eq!(taken_in_a_row(&mut bucket, limit, 1), 1);
    }
}
