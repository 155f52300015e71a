//! Callers already resolved: the [`Principal`] a credential (the whole `Authorization` value)
//! resolved to, so that the next request with the same credential skips the token's signature
//! and JSON, the user, group and access-token rows, and the host groups. This is what makes an
//! authenticated request cost about what an anonymous one does (issue 15: a bearer token cost
//! 255 µs more per manifest GET, most of it the database round trip on the blocking pool).
//!
//! Revocation still applies at once: an entry counts only while the store's identity generation
//! ([`crate::meta::Db::identity_generation`]) is the one read *before* the principal was resolved.
//! Every committed write to users, groups, memberships or access tokens bumps it (a password
//! change, a deleted user, a revoked token, a membership change), so the next request resolves
//! again from the database. Expiry still applies: an entry never outlives the credential's own
//! expiry (a bearer token's `exp`, an access token's expiry), nor its `ttl` (host groups are looked
//! up again then; for a password, `[auth] credential_cache_secs`).
//!
//! What is kept: HMAC-SHA256 of the credential under a key drawn at start (never written
//! anywhere) as the map key, never the credential itself; refusals are never kept. MUNGE
//! credentials are never looked up here: each one works once (munged refuses a replay), so a
//! remembered one would be a replay accepted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::credential_cache::{insert_bounded, KeyedHash};
use super::{AuthError, Principal};

/// Bound on remembered principals; beyond it, new ones are not remembered until entries expire.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    principal: Principal,
    generation: u64,
    until: Instant,
}

pub struct PrincipalCache {
    hash: KeyedHash,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl PrincipalCache {
    pub fn new() -> Result<PrincipalCache, AuthError> {
        Ok(PrincipalCache {
            hash: KeyedHash::new()?,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The principal `credential` resolved to, if that was at identity `generation` (the current
    /// one), less than its ttl ago, and the credential has not expired (`now`: Unix seconds).
    pub fn get(&self, credential: &str, generation: u64, now: i64) -> Option<Principal> {
        let key = self.hash.of(&[credential.as_bytes()]);
        let mut entries = self.lock();
        let entry = entries.get(&key)?;
        if entry.generation == generation
            && entry.until > Instant::now()
            && entry.principal.expires_at.is_none_or(|e| now < e)
        {
            return Some(entry.principal.clone());
        }
        entries.remove(&key);
        None
    }

    /// Remembers that `credential` resolved to `principal` from the store at identity
    /// `generation` (read before resolving), for at most `ttl`.
    pub fn insert(&self, credential: &str, generation: u64, principal: &Principal, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let key = self.hash.of(&[credential.as_bytes()]);
        let now = Instant::now();
        let entry = Entry {
            principal: principal.clone(),
            generation,
            until: now + ttl,
        };
        insert_bounded(&mut self.lock(), MAX_ENTRIES, key, entry, |_, e| {
            e.until > now && e.generation == generation
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(expires_at: Option<i64>) -> Principal {
        Principal {
            user: Some("alice".into()),
            expires_at,
            ..Principal::anonymous()
        }
    }

    #[test]
    fn hits_only_at_the_same_generation_and_before_expiry() {
        let c = PrincipalCache::new().unwrap();
        let ttl = Duration::from_secs(60);
        assert!(c.get("Bearer a", 1, 100).is_none());
        c.insert("Bearer a", 1, &alice(Some(200)), ttl);
        assert_eq!(c.get("Bearer a", 1, 100), Some(alice(Some(200))));
        assert!(c.get("Bearer b", 1, 100).is_none(), "another credential");
        assert!(
            c.get("Bearer a", 1, 200).is_none(),
            "the credential expired"
        );
        assert_eq!(c.len(), 0, "a stale entry goes with the miss");
        c.insert("Bearer a", 1, &alice(None), ttl);
        assert!(
            c.get("Bearer a", 2, 100).is_none(),
            "identities changed since"
        );
        c.insert("Bearer a", 2, &alice(None), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.get("Bearer a", 2, 100).is_none(), "older than its ttl");
        c.insert("Bearer a", 2, &alice(None), Duration::ZERO);
        assert_eq!(c.len(), 0, "a zero ttl remembers nothing");
    }
}
