//! Personal access tokens: `hpcr_<id>_<secret>`, 12 hex digits of public id and 256 random bits of
//! secret. The id finds the row; only SHA-256(secret) is stored, compared in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;
use crate::meta::TokenRow;

pub const PREFIX: &str = "hpcr_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// What a token may do, on top of what its owner may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TokenScope {
    Read,
    #[default]
    ReadWrite,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::ReadWrite => "read-write",
        }
    }

    pub fn parse(s: &str) -> Option<TokenScope> {
        match s {
            "read" => Some(TokenScope::Read),
            "read-write" => Some(TokenScope::ReadWrite),
            _ => None,
        }
    }
}

/// Makes a new token for `user`; returns the secret string (shown once) and the row to store.
pub fn generate(
    user: &str,
    description: &str,
    scope: TokenScope,
    expires_at: Option<i64>,
    now: i64,
) -> Result<(String, TokenRow), AuthError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    super::random_bytes(&mut id)?;
    super::random_bytes(&mut secret)?;
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let row = TokenRow {
        id: id.clone(),
        user: user.to_owned(),
        description: description.to_owned(),
        secret_sha256: secret_hash(&secret),
        scope: scope.as_str().to_owned(),
        created_at: now,
        expires_at,
        last_used_at: None,
    };
    Ok((format!("{PREFIX}{id}_{secret}"), row))
}

/// Splits a token into its id and secret; `None` if it is not shaped like one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some((id, secret))
}

pub fn looks_like_token(s: &str) -> bool {
    s.starts_with(PREFIX)
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` is the one `row` was made with (constant-time).
pub fn matches(row: &TokenRow, secret: &str) -> bool {
    let computed = secret_hash(secret);
    computed
        .as_bytes()
        .ct_eq(row.secret_sha256.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_parse_match() {
        let (token, row) = generate("alice", "ci", TokenScope::Read, None, 1).unwrap();
        let (id, secret) = parse(&token).unwrap();
        assert_eq!(id, row.id);
        assert!(matches(&row, secret));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!matches(&row, &wrong));
        assert!(!token.contains(&row.secret_sha256));
        assert_eq!(parse("hpcr_zz_00"), None);
        assert_eq!(parse("password"), None);
    }
}
