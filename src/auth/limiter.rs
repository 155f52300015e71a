//! Brute-force protection for passwords: failed logins are counted per (user name, client
//! address) and per client address in fixed windows; past the limit, further attempts get 429
//! with `Retry-After` until the window ends. In memory on purpose: it only has to slow guessing
//! down, and a restart is rare enough.
//!
//! A user name is counted together with the address the guesses come from, so that an attacker
//! guessing `admin`'s password from one machine locks out only that machine's password logins
//! for `admin`, never the user everywhere (and access tokens are not limited at all: see
//! `Access::login`). The per-address limit is separate (and higher by default) because on a
//! cluster hundreds of users share a login node's address: one user's typos must not lock the
//! others out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept before expired ones are swept; past it, new user names are not tracked (the
/// address still is), so random names cannot grow the map without bound.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    /// A user name (lower-cased) and the address it was tried from.
    User(String, Option<IpAddr>),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

pub struct Limiter {
    per_user: u32,
    per_address: u32,
    window: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Limiter {
    /// At most `per_user` failures for one user name from one address and `per_address` from one
    /// address (whatever the user name) per
    /// `window`; 0 disables that limit.
    pub fn new(per_user: u32, per_address: u32, window: Duration) -> Limiter {
        Limiter {
            per_user,
            per_address,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self, addr: Option<IpAddr>, user: Option<&str>) -> impl Iterator<Item = Key> {
        addr.filter(|_| self.per_address > 0)
            .map(Key::Addr)
            .into_iter()
            .chain(
                user.filter(|_| self.per_user > 0)
                    .map(|u| Key::User(u.to_ascii_lowercase(), addr)),
            )
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::Addr(_) => self.per_address,
            Key::User(..) => self.per_user,
        }
    }

    /// `Err(seconds to wait)` while `addr` or `user` is over the limit.
    pub fn check(&self, addr: Option<IpAddr>, user: Option<&str>) -> Result<(), u64> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None::<Duration>;
        for key in self.keys(addr, user) {
            if let Some(e) = entries.get(&key) {
                let age = now.saturating_duration_since(e.since);
                if age < self.window && e.failures >= self.limit(&key) {
                    let left = self.window - age;
                    wait = Some(wait.map_or(left, |w| w.max(left)));
                }
            }
        }
        match wait {
            // Round up: a client that waits exactly Retry-After must get through.
            Some(w) => Err(w.as_secs() + u64::from(w.subsec_nanos() > 0)),
            None => Ok(()),
        }
    }

    /// Counts one failed authentication.
    pub fn failed(&self, addr: Option<IpAddr>, user: Option<&str>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let window = self.window;
            entries.retain(|_, e| now.saturating_duration_since(e.since) < window);
        }
        for key in self.keys(addr, user) {
            if entries.len() >= MAX_ENTRIES && matches!(key, Key::User(..)) {
                continue;
            }
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                since: now,
            });
            if now.saturating_duration_since(e.since) >= self.window {
                *e = Entry {
                    failures: 0,
                    since: now,
                };
            }
            e.failures = e.failures.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_address_and_per_user() {
        let l = Limiter::new(3, 5, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(Some(a), Some("alice")).is_ok());
            l.failed(Some(a), Some("alice"));
        }
        let wait = l.check(Some(a), Some("ALICE")).unwrap_err();
        assert!((1..=60).contains(&wait));
        // The guesses from `a` do not lock alice out of another address ...
        assert!(l.check(Some(b), Some("alice")).is_ok());
        // ... and lock no one else out.
        assert!(l.check(Some(b), Some("bob")).is_ok());
        // The address has its own, higher limit.
        assert!(l.check(Some(a), Some("bob")).is_ok());
        l.failed(Some(a), Some("bob"));
        l.failed(Some(a), Some("carol"));
        assert!(l.check(Some(a), Some("dave")).is_err());
        assert!(l.check(Some(b), Some("dave")).is_ok());
    }

    #[test]
    fn window_expires() {
        let l = Limiter::new(1, 0, Duration::from_millis(50));
        l.failed(None, Some("x"));
        assert!(l.check(None, Some("X")).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check(None, Some("x")).is_ok());
    }
}
