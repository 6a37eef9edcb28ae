//! The pacing of Consul-style blocking queries (Consul's `X-Consul-Index`, Nomad's
//! `X-Nomad-Index`, which follows Consul's rules): the index for the next request and the
//! token bucket that keeps a server answering at once from making a watch spin.

use std::time::{Duration, Instant};

/// The index for the next request, given the last one and the one just returned: reset to
/// 0 when it went backwards (a snapshot restore, a new cluster behind the same address),
/// else the returned one, at least 1 (a blocking request never carries an index below 1).
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned < previous {
        0
    } else {
        returned.max(1)
    }
}

/// A token bucket: `capacity` requests at once, then one per `refill`.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    refill: Duration,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, refill: Duration, now: Instant) -> Self {
        TokenBucket {
            capacity: f64::from(capacity),
            refill,
            tokens: f64::from(capacity),
            last: now,
        }
    }

    /// Takes a token and says how long to wait before using it (zero when one was there).
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.refill.as_secs_f64()).min(self.capacity);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.refill.mul_f64(-self.tokens)
        }
    }

    /// Takes a token, sleeping first when none was there: what [`TokenBucket::take`] says
    /// plus up to half a `refill` of jitter, so many watches do not wake in lockstep.
    pub async fn pace(&mut self) {
        let delay = self.take(Instant::now());
        if !delay.is_zero() {
            tokio::time::sleep(delay + self.refill.mul_f64(fastrand::f64() * 0.5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        fn check(previous: u64, returned: u64, expected: u64) {
            assert_eq!(
                next_index(previous, returned),
                expected,
                "{previous} -> {returned}"
            );
        }
        check(0, 5, 5);
        check(5, 5, 5);
        check(5, 9, 9);
        check(9, 3, 0); // backwards: reset
        check(0, 0, 1); // never block below 1
        check(0, 3, 3);
        check(1, 0, 0); // backwards from 1 to 0: reset, the next answer sets it again
    }

    #[test]
    fn bucket_allows_a_burst_then_paces() {
        let start = Instant::now();
        let refill = Duration::from_millis(100);
        let mut bucket = TokenBucket::new(3, refill, start);
        let waits: Vec<Duration> = (0..5).map(|_| bucket.take(start)).collect();
        assert_eq!(
            waits,
            [
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                refill,
                refill * 2
            ]
        );
        // After a long quiet time the bucket is full again, never more.
        let later = start + Duration::from_secs(60);
        let waits: Vec<Duration> = (0..4).map(|_| bucket.take(later)).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3]);
        assert_eq!(waits[3], refill);
    }

    #[test]
    fn a_spinning_server_gets_at_most_the_refill_rate() {
        // Simulated time: every answer comes at once; the loop sleeps what the bucket says.
        let (burst, refill) = (10, Duration::from_millis(100));
        let start = Instant::now();
        let mut now = start;
        let mut bucket = TokenBucket::new(burst, refill, start);
        let mut requests = 0;
        while now < start + Duration::from_secs(10) {
            now += bucket.take(now);
            requests += 1;
        }
        // 10 s at one per 100 ms plus the burst.
        assert!(requests <= 10 * 10 + burst as usize + 1, "{requests}");
        assert!(requests >= 100, "{requests}");
    }
}
