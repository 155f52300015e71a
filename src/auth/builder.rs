//! Builder credentials: `hpcb_<id>_<secret>` (12 hex digits of public id, 256 random bits of
//! secret; only SHA-256(secret) is stored). A builder credential can do nothing but build: it
//! is accepted by the builder API (`/builder/v1`) alone. The main authentication
//! ([`super::Access::authenticate`]) does not know the prefix, so on `/v2`, `/sif`, `/token` and
//! `/admin` it is refused like any wrong credential; and the builder API accepts no other kind,
//! so a user's token never passes it.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;
use crate::meta::{self, BuilderRow, Db};

pub const PREFIX: &str = "hpcb_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
/// `last_used_at` is written at most this often.
const TOUCH_SECS: i64 = 60;

/// Who is calling the builder API, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderIdentity {
    pub name: String,
    pub platforms: Vec<String>,
    /// A one-job credential: only this job.
    pub job_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuilderAuthError {
    #[error("the builder API takes a builder credential (Authorization: Bearer hpcb_…)")]
    Missing,
    #[error("builder authentication failed: unknown, revoked or expired builder credential")]
    Refused,
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
}

/// What an admin asks for when creating a builder credential.
#[derive(Debug, Clone)]
pub struct NewBuilder {
    pub name: String,
    pub platforms: Vec<String>,
    pub job_id: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_by: String,
}

/// A builder's name: what audit records and job failures name it by.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A platform a builder may claim: `os/arch[/variant]`, lowercase letters and digits.
pub fn valid_platform(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Makes a credential: the secret string (shown once) and the row to store.
pub fn generate(new: &NewBuilder, now: i64) -> Result<(String, BuilderRow), AuthError> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    super::random_bytes(&mut id)?;
    super::random_bytes(&mut secret)?;
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    let row = BuilderRow {
        name: new.name.clone(),
        token_id: id.clone(),
        secret_sha256: hash(&secret),
        platforms: new.platforms.clone(),
        job_id: new.job_id,
        created_by: new.created_by.clone(),
        created_at: now,
        expires_at: new.expires_at,
        last_used_at: None,
    };
    Ok((format!("{PREFIX}{id}_{secret}"), row))
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a builder credential into its id and secret; `None` if it is not shaped like one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == 2 * n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some((id, secret))
}

/// Authenticates the `Authorization` value of a builder API request (blocking: call it off
/// the async threads or through `Db::read`'s pool).
pub fn authenticate(
    db: &Db,
    authorization: Option<&str>,
    now: i64,
) -> Result<BuilderIdentity, BuilderAuthError> {
    let token = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(BuilderAuthError::Missing)?;
    let (id, secret) = parse(token).ok_or(BuilderAuthError::Refused)?;
    let row = db
        .read_blocking(|c| meta::builder_by_token_id(c, id))?
        .ok_or(BuilderAuthError::Refused)?;
    let matches: bool = hash(secret)
        .as_bytes()
        .ct_eq(row.secret_sha256.as_bytes())
        .into();
    if !matches || row.expires_at.is_some_and(|e| now >= e) {
        return Err(BuilderAuthError::Refused);
    }
    if row.last_used_at.is_none_or(|l| now - l >= TOUCH_SECS) {
        db.write_blocking(|tx| meta::touch_builder(tx, &row.name, now))?;
    }
    Ok(BuilderIdentity {
        name: row.name,
        platforms: row.platforms,
        job_id: row.job_id,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BuilderAdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("a builder named {0} exists already (revoke it first)")]
    Exists(String),
    #[error("no builder named {0}")]
    NotFound(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
}

/// A builder credential as an admin sees it: the row, which never serializes its secret's hash.
pub type BuilderSummary = BuilderRow;

/// Creates builder credential `new` (blocking); returns the secret, shown once.
pub fn create(db: &Db, new: &NewBuilder) -> Result<(String, BuilderSummary), BuilderAdminError> {
    if !valid_name(&new.name) {
        return Err(BuilderAdminError::Invalid(format!(
            "builder name {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
            new.name
        )));
    }
    if new.platforms.is_empty() {
        return Err(BuilderAdminError::Invalid(
            "a builder needs at least one platform (--platform linux/amd64)".into(),
        ));
    }
    if let Some(p) = new.platforms.iter().find(|p| !valid_platform(p)) {
        return Err(BuilderAdminError::Invalid(format!(
            "platform {p:?} is not os/arch[/variant]"
        )));
    }
    let (secret, row) = generate(new, meta::now())?;
    if !db.write_blocking(|tx| meta::insert_builder(tx, &row))? {
        return Err(BuilderAdminError::Exists(new.name.clone()));
    }
    Ok((secret, row))
}

pub fn list(db: &Db) -> Result<Vec<BuilderSummary>, BuilderAdminError> {
    Ok(db.read_blocking(meta::list_builders)?)
}

/// Revokes builder `name` at once: its next request is refused, and the lease of a build it
/// holds runs out and the job goes to another builder.
pub fn revoke(db: &Db, name: &str) -> Result<(), BuilderAdminError> {
    if db.write_blocking(|tx| meta::delete_builder(tx, name))? {
        Ok(())
    } else {
        Err(BuilderAdminError::NotFound(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_and_parse() {
        let new = NewBuilder {
            name: "arm1".into(),
            platforms: vec!["linux/arm64".into()],
            job_id: None,
            expires_at: None,
            created_by: "ops".into(),
        };
        let (token, row) = generate(&new, 1).unwrap();
        let (id, secret) = parse(&token).unwrap();
        assert_eq!(id, row.token_id);
        assert_eq!(hash(secret), row.secret_sha256);
        assert!(!token.contains(&row.secret_sha256));
        // A user's access token is not a builder credential, nor the other way round.
        assert_eq!(parse(&format!("hpcr_{}", &token[PREFIX.len()..])), None);
        assert!(!super::super::pat::looks_like_token(&token));
        assert!(valid_name("arm-1.site_a") && !valid_name("a b") && !valid_name(""));
        assert!(
            valid_platform("linux/arm64/v8")
                && !valid_platform("linux")
                && !valid_platform("Linux/x")
        );
    }
}
