//! When a failed delivery is tried again: exponential back-off with jitter, capped, for a
//! bounded number of attempts.

use crate::config::NotificationsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_secs: u64,
    pub max_secs: u64,
}

impl RetryPolicy {
    pub fn from_config(c: &NotificationsConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: c.max_attempts.max(1),
            base_secs: c.retry_base_secs.max(1),
            max_secs: c.retry_max_secs.max(1),
        }
    }

    /// Seconds to wait after the `attempts`-th failed attempt (1 = the first), or `None` when
    /// that was the last. `jitter` in [0, 1) picks the wait within its upper half, so receivers
    /// that came back are not hit by every sender at once.
    pub fn delay_after(&self, attempts: u32, jitter: f64) -> Option<u64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exp = attempts.saturating_sub(1).min(32);
        let full = self
            .base_secs
            .saturating_mul(1u64 << exp)
            .min(self.max_secs);
        let jitter = jitter.clamp(0.0, 1.0);
        Some(((full as f64) * (0.5 + jitter / 2.0)).ceil().max(1.0) as u64)
    }
}

/// A number in [0, 1) from the OS's random source (0.5 if it has none).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => u32::from_le_bytes(b) as f64 / (u32::MAX as f64 + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_within_their_upper_half_and_stop_after_the_last_attempt() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_secs: 10,
            max_secs: 35,
        };
        assert_eq!(p.delay_after(1, 0.0), Some(5));
        assert_eq!(p.delay_after(1, 0.999_999), Some(10));
        assert_eq!(p.delay_after(2, 0.999_999), Some(20));
        assert_eq!(p.delay_after(3, 0.999_999), Some(35), "capped");
        assert_eq!(p.delay_after(4, 0.0), Some(18));
        assert_eq!(
            p.delay_after(5, 0.5),
            None,
            "the fifth attempt was the last"
        );
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
