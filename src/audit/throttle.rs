//! Rate limit on failure records per client address: a storm of refused requests must not turn
//! into a storm of fsynced audit lines. Each address may write [`BURST`] failure records per
//! [`WINDOW`]; the rest are counted, and one `audit.suppressed` record per address and window
//! says how many were left out (so the trail stays honest about what it does not hold).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Record;

/// Failure records one address may write per window.
pub const BURST: u32 = 30;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; beyond, new addresses share one bucket (`client: null`).
const MAX_CLIENTS: usize = 10_000;

#[derive(Default)]
pub struct Throttle(Mutex<HashMap<Option<IpAddr>, Window>>);

struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
    /// RFC 3339 times of the first and last suppressed record.
    first: String,
    last: String,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            start: now,
            written: 0,
            suppressed: 0,
            first: String::new(),
            last: String::new(),
        }
    }

    fn summary(&self, client: Option<IpAddr>) -> Option<Record> {
        if self.suppressed == 0 {
            return None;
        }
        let mut r = Record::new("audit.suppressed", "suppressed");
        r.client = client.map(|c| c.to_string());
        r.detail = Some(format!(
            "{} failure records from this client were not written (more than {BURST} in {} s), the first at {}, the last at {}",
            self.suppressed,
            WINDOW.as_secs(),
            self.first,
            self.last
        ));
        Some(r)
    }
}

impl Throttle {
    /// Whether a failure record from `client` is written (`true`) or only counted, and the
    /// summary of the address's previous window to write first, if that window has ended.
    pub fn admit(&self, client: Option<IpAddr>, time: &str) -> (bool, Option<Record>) {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = if map.len() >= MAX_CLIENTS && !map.contains_key(&client) {
            None
        } else {
            client
        };
        let w = map.entry(key).or_insert_with(|| Window::new(now));
        let mut summary = None;
        if now.duration_since(w.start) >= WINDOW {
            summary = w.summary(key);
            *w = Window::new(now);
        }
        if w.written < BURST {
            w.written += 1;
            return (true, summary);
        }
        w.suppressed += 1;
        if w.first.is_empty() {
            w.first = time.to_owned();
        }
        w.last = time.to_owned();
        (false, summary)
    }

    /// Summaries of the windows that have ended (all of them with `all`), which are forgotten.
    pub fn take_summaries(&self, all: bool) -> Vec<Record> {
        let now = Instant::now();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        map.retain(|client, w| {
            let ended = now.duration_since(w.start) >= WINDOW;
            if ended || all {
                out.extend(w.summary(*client));
                // A window still running keeps counting what it has let through.
                if ended {
                    return false;
                }
                w.suppressed = 0;
                w.first.clear();
                w.last.clear();
            }
            true
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storms_are_counted_not_written() {
        let t = Throttle::default();
        let a: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let b: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        let written = (0..1000).filter(|_| t.admit(a, "t").0).count();
        assert_eq!(written, BURST as usize);
        // Another address has its own allowance.
        assert!(t.admit(b, "t").0);
        let s = t.take_summaries(true);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].client.as_deref(), Some("10.0.0.1"));
        assert!(s[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("970 failure records"));
        // Counted once: a second drain has nothing to say, and the window stays spent.
        assert!(t.take_summaries(true).is_empty());
        assert!(!t.admit(a, "t").0);
    }
}
