//! The bearer tokens `/token` hands out (Docker's token flow): compact JWTs signed with HS256.
//!
//! Hand-rolled on `hmac` + `sha2` on purpose: the registry both issues and checks these tokens with
//! one secret key, so the only algorithm it ever needs is HS256, and a JWT crate would bring a
//! heavy crypto backend for nothing. The header's `alg` is checked to be exactly `HS256` (never
//! `none`), the signature is compared in constant time, and `exp`/`nbf`/`iss`/`aud` are enforced.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::AuthError;

/// Issuer and audience of every token: tokens are only ever checked by the registry that made them.
pub const SERVICE: &str = "hpc-registry";
/// Clock skew tolerated on `nbf`.
const LEEWAY_SECS: i64 = 30;
const KEY_LEN: usize = 32;

/// The HS256 signing key, kept in `DATA/token.key` (0600).
pub struct TokenKey([u8; KEY_LEN]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// One grant, as in Docker's token spec: `{"type":"repository","name":"alice/x","actions":["pull"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// How the holder first authenticated (`password`, `token`, `token-read`), for the audit
    /// trail; a token got with a bearer token keeps its source's.
    pub amr: String,
    pub access: Vec<Grant>,
    /// The credential behind it only pulls: every token derived from it only pulls too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ro: bool,
    /// The access token (its id) the token was derived from, however many steps ago: the token
    /// dies with it (revoked, expired, or its owner gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pat: Option<String>,
}

/// Why a token was refused (never shown in detail to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued for another service")]
    Audience,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
}

impl TokenKey {
    /// Reads the key, or creates it (random, mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, AuthError> {
        let io = |e: std::io::Error| AuthError::Key(format!("{}: {e}", path.display()));
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let meta = std::fs::metadata(path).map_err(io)?;
                if meta.permissions().mode() & 0o077 != 0 {
                    // Tighten rather than refuse: the key is useless to an attacker who could
                    // only have read it before this point anyway, and the server must start.
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                    tracing::warn!("{} was readable by others; now 0600", path.display());
                }
                let bytes = hex::decode(text.trim())
                    .map_err(|_| AuthError::Key(format!("{} is not hex", path.display())))?;
                let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                    AuthError::Key(format!("{} must hold {KEY_LEN} bytes", path.display()))
                })?;
                Ok(TokenKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                super::random_bytes(&mut key)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                writeln!(f, "{}", hex::encode(key)).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(TokenKey(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    pub fn from_bytes(key: [u8; KEY_LEN]) -> TokenKey {
        TokenKey(key)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let header = Header {
            alg: "HS256".into(),
            typ: "JWT".into(),
        };
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let header = serde_json::to_vec(&header).map_err(|e| AuthError::Hash(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| AuthError::Hash(e.to_string()))?;
        let signing_input = format!("{}.{}", enc(&header), enc(&payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        Ok(format!("{signing_input}.{}", enc(&sig)))
    }

    /// Checks signature, algorithm, audience and validity window at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let dec = |v: &str| URL_SAFE_NO_PAD.decode(v).map_err(|_| TokenError::Malformed);
        let header: Header = serde_json::from_slice(&dec(h)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let sig = dec(s)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        // Only a correctly signed payload is parsed.
        let claims: Claims = serde_json::from_slice(&dec(p)?).map_err(|_| TokenError::Malformed)?;
        if claims.iss != SERVICE || claims.aud != SERVICE {
            return Err(TokenError::Audience);
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + LEEWAY_SECS {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: SERVICE.into(),
            sub: "alice".into(),
            aud: SERVICE.into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "j1".into(),
            amr: "password".into(),
            access: vec![Grant {
                kind: "repository".into(),
                name: "alice/x".into(),
                actions: vec!["pull".into(), "push".into()],
            }],
            ro: false,
            pat: None,
        }
    }

    #[test]
    fn sign_and_verify() {
        let key = TokenKey::from_bytes([7; 32]);
        let t = key.sign(&claims(1000)).unwrap();
        assert_eq!(key.verify(&t, 1001).unwrap(), claims(1000));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = TokenKey::from_bytes([7; 32]);
        let t = key.sign(&claims(1000)).unwrap();
        let mut forged = claims(1000);
        forged.sub = "bob".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(key.verify(&tampered, 1001), Err(TokenError::Signature));
        // A flipped signature character too.
        let mut sig = parts[2].to_owned();
        let last = if sig.ends_with('A') { 'B' } else { 'A' };
        sig.pop();
        sig.push(last);
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], sig);
        assert!(key.verify(&bad_sig, 1001).is_err());
        assert_eq!(key.verify("a.b", 1001), Err(TokenError::Malformed));
    }

    #[test]
    fn alg_none_is_refused() {
        let key = TokenKey::from_bytes([7; 32]);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(1000)).unwrap());
        assert_eq!(
            key.verify(&format!("{header}.{payload}."), 1001),
            Err(TokenError::Algorithm)
        );
    }

    #[test]
    fn expired_and_future_tokens_are_refused() {
        let key = TokenKey::from_bytes([7; 32]);
        let t = key.sign(&claims(1000)).unwrap();
        assert_eq!(key.verify(&t, 1300), Err(TokenError::Expired));
        assert_eq!(key.verify(&t, 900), Err(TokenError::NotYetValid));
    }

    #[test]
    fn wrong_key_is_refused() {
        let t = TokenKey::from_bytes([7; 32]).sign(&claims(1000)).unwrap();
        assert_eq!(
            TokenKey::from_bytes([8; 32]).verify(&t, 1001),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token.key");
        let a = TokenKey::load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = TokenKey::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
    }
}
