//! Password hashing: argon2id for everything this registry stores, bcrypt only to verify hashes
//! imported from Apache htpasswd files (upgraded to argon2id at the user's next login).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};

use super::AuthError;

/// Outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored with an older scheme (bcrypt): store a fresh argon2id hash.
    YesRehash,
}

/// argon2id (the crate's defaults: 19 MiB, 2 passes, the OWASP recommendation) with a random salt,
/// as a PHC string.
pub fn hash(password: &str) -> Result<String, AuthError> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Checks `password` against a stored argon2id PHC string or bcrypt (`$2a$`, `$2b$`, `$2y$`) hash.
/// Both comparisons are constant-time inside their crates.
pub fn verify(password: &str, stored: &str) -> Verified {
    if is_bcrypt(stored) {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verified::YesRehash,
            _ => Verified::No,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified::No;
    };
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Verified::Yes,
        Err(_) => Verified::No,
    }
}

/// Burns the time of one verification so that an unknown user name cannot be told apart from a
/// wrong password by the response time.
pub fn verify_dummy(password: &str) {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("not a real password").unwrap_or_default());
    let _ = verify(password, stored);
}

pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// A random password of `len` characters from an alphabet without look-alikes (0/O, 1/l/I).
pub fn random_password(len: usize) -> Result<String, AuthError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        super::random_bytes(&mut buf)?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for b in buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_eq!(verify("correct horse", &h), Verified::Yes);
        assert_eq!(verify("wrong", &h), Verified::No);
        assert_eq!(verify("x", "garbage"), Verified::No);
    }

    #[test]
    fn bcrypt_from_htpasswd_verifies_and_asks_for_rehash() {
        // `htpasswd -nbB alice secret` style hash (cost 4 to keep the test fast).
        let h = bcrypt::hash("secret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        assert_eq!(verify("secret", &h), Verified::YesRehash);
        assert_eq!(verify("Secret", &h), Verified::No);
    }

    #[test]
    fn random_passwords_differ_and_have_the_length() {
        let a = random_password(20).unwrap();
        let b = random_password(20).unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }
}
