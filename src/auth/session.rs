//! What a web UI session stays bound to after its login, and the caller it resolves to on each
//! later request.
//!
//! A session keeps no secret of its login (no password, no token). It remembers who logged in,
//! how, and what that credential was at the time: the access token's id, or a fingerprint of the
//! stored password hash. Every request re-resolves the caller through the principal cache, like
//! every other credential, so a password change, a revoked or expired token, a deleted user or
//! a changed membership takes effect at the session's next request.

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::pat::TokenScope;
use super::{blocking, meta, Access, AuthMethod, Principal, RESOLVED_TTL};
use crate::registry::error::Error;

/// The login a session was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBinding {
    pub user: String,
    pub method: AuthMethod,
    /// The access token logged in with (its id, never the secret).
    pub token_id: Option<String>,
    /// SHA-256 of the password hash stored at login: the session ends when it changes.
    password_fingerprint: Option<[u8; 32]>,
}

impl SessionBinding {
    /// A binding to test session stores with (it resolves to nobody).
    #[cfg(test)]
    pub fn for_tests(user: &str, method: AuthMethod) -> SessionBinding {
        SessionBinding {
            user: user.to_owned(),
            method,
            token_id: None,
            password_fingerprint: None,
        }
    }
}

fn fingerprint(hash: &str) -> [u8; 32] {
    Sha256::digest(hash.as_bytes()).into()
}

impl Access {
    /// The binding of a session opened by `p`, who just logged in with a password or an access
    /// token. `Ok(None)`: no session for this caller (another method, or the user went since).
    pub async fn bind_session(&self, p: &Principal) -> Result<Option<SessionBinding>, Error> {
        let Some(user) = p.user.clone() else {
            return Ok(None);
        };
        match p.method {
            AuthMethod::AccessToken => Ok(p.token_id.clone().map(|id| SessionBinding {
                user,
                method: AuthMethod::AccessToken,
                token_id: Some(id),
                password_fingerprint: None,
            })),
            AuthMethod::Password => {
                let (db, name) = (std::sync::Arc::clone(&self.db), user.clone());
                let row = blocking(move || Ok(db.read_blocking(|c| meta::user_by_name(c, &name))?))
                    .await?;
                Ok(row
                    .and_then(|r| r.password_hash)
                    .map(|hash| SessionBinding {
                        user,
                        method: AuthMethod::Password,
                        token_id: None,
                        password_fingerprint: Some(fingerprint(&hash)),
                    }))
            }
            _ => Ok(None),
        }
    }

    /// The caller of a session now (`key` names the session for the principal cache, and is
    /// no secret of the login). `Ok(None)`: the login no longer holds, so the session ends.
    pub async fn resume_session(
        &self,
        key: &str,
        binding: &SessionBinding,
    ) -> Result<Option<Principal>, Error> {
        let generation = self.db.identity_generation();
        if let Some(p) = self.principals.get(key, generation, meta::now()) {
            return Ok(Some(p));
        }
        let (db, b) = (std::sync::Arc::clone(&self.db), binding.clone());
        let found = blocking(move || {
            let now = meta::now();
            Ok(db.read_blocking(|c| {
                let Some(row) = meta::user_by_name(c, &b.user)? else {
                    return Ok(None);
                };
                let groups = meta::memberships(c, &b.user)?;
                let mut p = Principal::from_user(&row, groups, b.method);
                match (b.method, &b.token_id, &b.password_fingerprint) {
                    (AuthMethod::Password, _, Some(want)) => {
                        let same = row
                            .password_hash
                            .as_deref()
                            .is_some_and(|h| bool::from(fingerprint(h).ct_eq(want)));
                        if !same {
                            return Ok(None);
                        }
                    }
                    (AuthMethod::AccessToken, Some(id), _) => {
                        let Some(t) = meta::token_by_id(c, id)? else {
                            return Ok(None);
                        };
                        if t.user != b.user || t.expires_at.is_some_and(|e| now >= e) {
                            return Ok(None);
                        }
                        p.read_only = TokenScope::parse(&t.scope) != Some(TokenScope::ReadWrite);
                        p.token_id = Some(t.id);
                        p.expires_at = t.expires_at;
                    }
                    _ => return Ok(None),
                }
                Ok(Some(p))
            })?)
        })
        .await?;
        let Some(p) = found else {
            return Ok(None);
        };
        let p = self.with_host_groups(p).await?;
        self.principals.insert(key, generation, &p, RESOLVED_TTL);
        Ok(Some(p))
    }
}
