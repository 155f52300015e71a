//! The one pacing rule of the long lifecycle runs: a scrub's bytes read per second, a GC's blobs
//! deleted per second (so a sweep of millions of files does not swamp a parallel filesystem's
//! metadata server).

use std::time::{Duration, Instant};

/// Keeps the average rate at or below `rate` units/s by sleeping when ahead of schedule.
pub(crate) struct Throttle {
    rate: u64,
    started: Instant,
    units: u64,
}

impl Throttle {
    /// `rate` units per second; 0 never waits.
    pub(crate) fn new(rate: u64) -> Self {
        Throttle {
            rate,
            started: Instant::now(),
            units: 0,
        }
    }

    /// `n` more units done; sleeps (blocking) while they are ahead of the rate.
    pub(crate) fn consumed(&mut self, n: u64) {
        self.units += n;
        if let Some(wait) = self.ahead_by(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }

    /// How far the work is ahead of the schedule after `elapsed`.
    fn ahead_by(&self, elapsed: Duration) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let due = Duration::from_secs_f64(self.units as f64 / self.rate as f64);
        due.checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_waits_only_when_ahead_of_the_rate() {
        let mut t = Throttle::new(1000);
        t.units = 2000;
        // 2000 units at 1000/s are due at 2 s.
        assert_eq!(
            t.ahead_by(Duration::from_millis(500)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(t.ahead_by(Duration::from_secs(3)), None);
        t.rate = 0;
        assert_eq!(t.ahead_by(Duration::ZERO), None);
    }
}
