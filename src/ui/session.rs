//! The UI's sessions: a 256-bit random id in an `HttpOnly; SameSite=Strict` cookie (`Secure`
//! under TLS) scoped to `/ui`, kept server-side in memory keyed by the id's SHA-256 (so the
//! store holds nothing a cookie can be made from), with idle and absolute expiry, and a
//! per-session CSRF token compared in constant time. A restart logs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::session::SessionBinding;

/// The session cookie's name.
pub const COOKIE: &str = "hpcr_session";
/// The cookie path: the session authenticates `/ui` and nothing else.
pub const COOKIE_PATH: &str = "/ui";
/// The login form's double-submit cookie (login CSRF: nobody logs a victim in as themselves).
pub const LOGIN_COOKIE: &str = "hpcr_login";
/// Most sessions kept at once; beyond it the oldest idle one goes.
const MAX_SESSIONS: usize = 10_000;

/// How long sessions live (`[ui] session_idle_secs`, `session_max_secs`).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub max: Duration,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            idle: Duration::from_secs(3600),
            max: Duration::from_secs(12 * 3600),
        }
    }
}

/// One open session.
#[derive(Debug, Clone)]
pub struct Session {
    pub binding: SessionBinding,
    /// The CSRF token every form of this session carries (hex of 32 random bytes).
    pub csrf: String,
    /// The key of this session's caller in the principal cache (hex of the id's hash).
    pub key: String,
    created: Instant,
    last_seen: Instant,
}

/// The sessions of one server.
pub struct Sessions {
    lifetimes: Lifetimes,
    open: Mutex<HashMap<[u8; 32], Session>>,
}

/// A fresh session's cookie value (the id) and its CSRF token.
pub struct Opened {
    pub id: String,
    pub csrf: String,
}

fn hash_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes, as URL-safe base64 (cookie values) or hex (form fields).
pub fn random_token() -> Result<[u8; 32], crate::auth::AuthError> {
    let mut b = [0u8; 32];
    crate::auth::random_bytes(&mut b)?;
    Ok(b)
}

/// Constant-time equality of two tokens as sent (lengths may differ: then they differ).
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    pub fn new(lifetimes: Lifetimes) -> Sessions {
        Sessions {
            lifetimes,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Opens a session for `binding`; the id goes into the cookie and nowhere else.
    pub fn open(&self, binding: SessionBinding) -> Result<Opened, crate::auth::AuthError> {
        let id = URL_SAFE_NO_PAD.encode(random_token()?);
        let csrf = hex::encode(random_token()?);
        let hash = hash_of(&id);
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut open, now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                open.remove(&oldest);
            }
        }
        open.insert(
            hash,
            Session {
                binding,
                csrf: csrf.clone(),
                key: format!("ui-session {}", hex::encode(hash)),
                created: now,
                last_seen: now,
            },
        );
        Ok(Opened { id, csrf })
    }

    /// The live session of cookie value `id` (its idle clock restarted), or `None`: unknown,
    /// idle too long, or past its absolute lifetime (then it is removed).
    pub fn touch(&self, id: &str) -> Option<Session> {
        let hash = hash_of(id);
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let session = open.get_mut(&hash)?;
        if !self.alive(session, now) {
            open.remove(&hash);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Ends the session of cookie value `id` (logout, or a login that no longer holds).
    pub fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(&hash_of(id));
    }

    /// Sessions open now (expired ones not counted).
    pub fn count(&self) -> usize {
        let now = Instant::now();
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values().filter(|s| self.alive(s, now)).count()
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.lifetimes.idle
            && now.duration_since(s.created) < self.lifetimes.max
    }

    fn sweep(&self, open: &mut HashMap<[u8; 32], Session>, now: Instant) {
        open.retain(|_, s| self.alive(s, now));
    }
}

/// The `Set-Cookie` value of a session cookie (`None`: one that deletes it).
pub fn session_cookie(value: Option<&str>, secure: bool, max_age: Duration) -> String {
    build_cookie(COOKIE, value, COOKIE_PATH, secure, max_age)
}

/// The `Set-Cookie` value of the login form's double-submit cookie.
pub fn login_cookie(value: Option<&str>, secure: bool) -> String {
    build_cookie(
        LOGIN_COOKIE,
        value,
        "/ui/login",
        secure,
        Duration::from_secs(3600),
    )
}

fn build_cookie(
    name: &'static str,
    value: Option<&str>,
    path: &'static str,
    secure: bool,
    max_age: Duration,
) -> String {
    let mut c = cookie::Cookie::build((name, value.unwrap_or("").to_owned()))
        .path(path)
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(secure);
    c = match value {
        Some(_) => c.max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        )),
        None => c.max_age(cookie::time::Duration::ZERO),
    };
    c.build().to_string()
}

/// The value of cookie `name` in a request's `Cookie` headers, if any.
pub fn cookie_value<'h>(headers: impl Iterator<Item = &'h str>, name: &str) -> Option<String> {
    headers
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;

    fn binding() -> SessionBinding {
        crate::auth::session::SessionBinding::for_tests("alice", AuthMethod::AccessToken)
    }

    #[test]
    fn sessions_expire_when_idle_or_old_and_close() {
        let s = Sessions::new(Lifetimes {
            idle: Duration::from_millis(200),
            max: Duration::from_secs(60),
        });
        let o = s.open(binding()).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&o.id).unwrap().len(), 32);
        assert_eq!(s.touch(&o.id).unwrap().csrf, o.csrf);
        assert!(s.touch("forged").is_none());
        std::thread::sleep(Duration::from_millis(300));
        assert!(s.touch(&o.id).is_none(), "idle session still open");
        let o = s.open(binding()).unwrap();
        s.close(&o.id);
        assert!(s.touch(&o.id).is_none());
        let old = Sessions::new(Lifetimes {
            idle: Duration::from_secs(60),
            max: Duration::from_millis(100),
        });
        let o = old.open(binding()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert!(old.touch(&o.id).is_none(), "session outlived its maximum");
    }

    #[test]
    fn cookies() {
        let c = session_cookie(Some("abc"), true, Duration::from_secs(60));
        for part in [
            "hpcr_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/ui",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!session_cookie(Some("abc"), false, Duration::from_secs(1)).contains("Secure"));
        let headers = ["a=1; hpcr_session=xyz", "b=2"];
        assert_eq!(
            cookie_value(headers.iter().copied(), COOKIE).as_deref(),
            Some("xyz")
        );
        assert!(same_token("abc", "abc") && !same_token("abc", "abd") && !same_token("a", "ab"));
    }
}
