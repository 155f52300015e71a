//! A short-lived memory of passwords already verified, so that Basic auth with a password (batch
//! scripts calling curl) pays argon2 once per `[auth] credential_cache_secs`, not on every request.
//!
//! What is kept, per successful verification: HMAC-SHA256 under a key drawn at start (never
//! written anywhere) of the user name and password, as the map key; the user name; a SHA-256 of
//! the stored password hash the password matched; an expiry. The password itself is never kept,
//! and the keyed hash is useless outside this process.
//!
//! An entry counts only while the user's stored hash is still the one it matched: the caller
//! reads the user's row on every request anyway (for the groups), so a password changed by any
//! means (the admin API in this process, or the offline CLI before a restart), or a deleted user
//! (no row), fails at once. Failed verifications are never remembered, so a wrong password always
//! pays argon2 (and the failed-login limiter).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::AuthError;

/// Bound on remembered credentials; beyond it, new ones are simply not remembered until entries
/// expire (they still log in, paying argon2).
const MAX_ENTRIES: usize = 10_000;

/// HMAC-SHA256 under a key drawn at start and never written anywhere: map keys derived from
/// secrets that are useless outside this process.
pub struct KeyedHash([u8; 32]);

impl KeyedHash {
    pub fn new() -> Result<KeyedHash, AuthError> {
        let mut key = [0u8; 32];
        super::random_bytes(&mut key)?;
        Ok(KeyedHash(key))
    }

    /// The keyed hash of `parts`, each length-prefixed so that ("ab", "c") and ("a", "bc") differ.
    pub fn of(&self, parts: &[&[u8]]) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) else {
            // HMAC takes keys of any length.
            unreachable!()
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Inserts into a map bounded to `max` entries: when full, entries `keep` rejects are dropped
/// first, and if it is still full nothing is inserted (what is not remembered is resolved again).
pub fn insert_bounded<V>(
    map: &mut HashMap<[u8; 32], V>,
    max: usize,
    key: [u8; 32],
    value: V,
    keep: impl FnMut(&[u8; 32], &mut V) -> bool,
) {
    if map.len() >= max {
        map.retain(keep);
        if map.len() >= max {
            return;
        }
    }
    map.insert(key, value);
}

struct Entry {
    user: String,
    stored: [u8; 32],
    expires: Instant,
}

pub struct CredentialCache {
    key: KeyedHash,
    /// Zero: nothing is remembered.
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> Result<CredentialCache, AuthError> {
        Ok(CredentialCache {
            key: KeyedHash::new()?,
            ttl,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn key_of(&self, user: &str, password: &str) -> [u8; 32] {
        self.key.of(&[user.as_bytes(), password.as_bytes()])
    }

    fn fingerprint(stored_hash: &str) -> [u8; 32] {
        Sha256::digest(stored_hash.as_bytes()).into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `password` was verified for `user` against exactly `stored_hash` (the hash stored
    /// now) less than the TTL ago.
    pub fn hit(&self, user: &str, password: &str, stored_hash: &str) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let key = self.key_of(user, password);
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(e)
                if e.expires > Instant::now()
                    && e.user == user
                    && e.stored == Self::fingerprint(stored_hash) =>
            {
                true
            }
            Some(_) => {
                entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful verification of `password` for `user` against `stored_hash`.
    pub fn remember(&self, user: &str, password: &str, stored_hash: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let key = self.key_of(user, password);
        let now = Instant::now();
        let entry = Entry {
            user: user.to_owned(),
            stored: Self::fingerprint(stored_hash),
            expires: now + self.ttl,
        };
        insert_bounded(&mut self.lock(), MAX_ENTRIES, key, entry, |_, e| {
            e.expires > now
        });
    }

    /// Drops every entry of `user` (password changed, user deleted). Not needed for correctness
    /// (see the module comment), but nothing about a changed credential should outlive the change.
    pub fn forget_user(&self, user: &str) {
        self.lock().retain(|_, e| e.user != user);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_verified_password_against_the_same_stored_hash_hits() {
        let c = CredentialCache::new(Duration::from_secs(60)).unwrap();
        assert!(!c.hit("alice", "pw", "$h1"));
        c.remember("alice", "pw", "$h1");
        assert!(c.hit("alice", "pw", "$h1"));
        assert!(!c.hit("alice", "pW", "$h1"), "another password");
        assert!(!c.hit("bob", "pw", "$h1"), "another user");
        assert!(!c.hit("alic", "epw", "$h1"), "user/password boundary");
        assert!(!c.hit("alice", "pw", "$h2"), "password changed since");
        // The stale entry went with the miss.
        assert_eq!(c.len(), 0);
        c.remember("alice", "pw", "$h2");
        c.remember("bob", "pw", "$h3");
        c.forget_user("alice");
        assert!(!c.hit("alice", "pw", "$h2"));
        assert!(c.hit("bob", "pw", "$h3"));
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_remembers_nothing() {
        let c = CredentialCache::new(Duration::from_millis(1)).unwrap();
        c.remember("alice", "pw", "$h1");
        std::thread::sleep(Duration::from_millis(20));
        assert!(!c.hit("alice", "pw", "$h1"));
        let off = CredentialCache::new(Duration::ZERO).unwrap();
        off.remember("alice", "pw", "$h1");
        assert!(!off.hit("alice", "pw", "$h1"));
    }
}
