//! Who is calling and what they may do.
//!
//! A middleware ([`crate::http::auth`]) authenticates every request once with
//! [`Access::authenticate`] (Basic password or access token, bearer token from `/token`, MUNGE)
//! and hands the resulting [`Principal`] to the handlers, which ask [`Access::check`] (or
//! [`Access::readable`] for reads that must hide what the caller may not see) before acting. Every
//! decision goes through [`policy::Policy::may`].

pub mod builder;
pub mod contact;
pub mod credential_cache;
pub mod jwt;
pub mod limiter;
pub mod manage;
pub mod munge;
pub mod password;
pub mod pat;
pub mod policy;
pub mod posix_groups;
pub mod principal_cache;
pub mod session;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::meta::{self, Db, UserRow};
use crate::registry::error::Error;
use crate::registry::names::RepositoryName;
use jwt::{Claims, Grant, TokenKey};
use limiter::Limiter;
use munge::{Munge, MungeError};
use password::Verified;
use pat::TokenScope;
use policy::Policy;

/// What anonymous callers may do is configuration (`[auth] anonymous`); auth reads it.
pub use crate::config::Anonymous;

/// An action on a repository, as in Docker token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    /// The name in Docker token scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// How a caller proved who they are (recorded with every audited action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    Anonymous,
    Password,
    /// A personal access token (Basic or `Bearer hpcr_...`).
    AccessToken,
    /// A token from `/token`.
    Bearer,
    Munge,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Password => "password",
            AuthMethod::AccessToken => "token",
            AuthMethod::Bearer => "bearer",
            AuthMethod::Munge => "munge",
        }
    }
}

/// Membership in a group; `read_only` members pull only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub group: String,
    pub read_only: bool,
}

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `None`: anonymous.
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub admin: bool,
    pub groups: Vec<Membership>,
    pub method: AuthMethod,
    /// The credential only pulls (read-only access token, MUNGE).
    pub read_only: bool,
    /// A bearer token's grants: nothing outside them is allowed, whatever the user may do.
    pub grants: Option<Vec<Grant>>,
    /// The access token used, if any (its id, never the secret); for a bearer token, the access
    /// token it was derived from.
    pub token_id: Option<String>,
    /// When the credential stops being valid (Unix seconds): an access token's expiry, a bearer
    /// token's `exp`. A token derived from this credential never outlives it.
    pub expires_at: Option<i64>,
    /// For a bearer token: the `amr` it carries, i.e. how its first holder authenticated.
    pub amr: Option<String>,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal {
            user: None,
            uid: None,
            admin: false,
            groups: Vec::new(),
            method: AuthMethod::Anonymous,
            read_only: false,
            grants: None,
            token_id: None,
            expires_at: None,
            amr: None,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// The identity's rights without a bearer token's narrowing (for listings and `/token`).
    fn without_grants(&self) -> Principal {
        Principal {
            grants: None,
            ..self.clone()
        }
    }

    fn from_user(row: &UserRow, groups: Vec<meta::MemberRow>, method: AuthMethod) -> Principal {
        Principal {
            user: Some(row.name.clone()),
            uid: row.uid.and_then(|u| u32::try_from(u).ok()),
            admin: row.admin,
            groups: groups
                .into_iter()
                .map(|m| Membership {
                    read_only: m.role == manage::ROLE_READ_ONLY,
                    group: m.group,
                })
                .collect(),
            method,
            read_only: false,
            grants: None,
            token_id: None,
            expires_at: None,
            amr: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("token signing key: {0}")]
    Key(String),
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), AuthError> {
    getrandom::fill(buf).map_err(|e| AuthError::Random(e.to_string()))
}

/// The answer of `/token`, as Docker expects it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: i64,
    pub issued_at: String,
}

/// Access tokens' `last_used_at` is written at most this often, not on every request.
const TOKEN_TOUCH_SECS: i64 = 60;
/// How long a resolved token's caller is reused (within its expiry, and while no identity
/// changes): as long as host groups are (see [`posix_groups`]), and no longer than an access
/// token's `last_used_at` may lag.
const RESOLVED_TTL: Duration = Duration::from_secs(TOKEN_TOUCH_SECS as u64);
/// Message for every failed password or token login, whatever failed (no user enumeration).
const BAD_CREDENTIALS: &str = "authentication failed: wrong user name, password or token";

/// Authentication and authorization for one server.
pub struct Access {
    policy: Policy,
    db: Arc<Db>,
    key: TokenKey,
    munge: Option<Munge>,
    limiter: Limiter,
    token_ttl_secs: i64,
    /// Password hashing is deliberately expensive (and 19 MiB each): at most the pool's size run
    /// at once, the rest queue there.
    hashing: password::HashPool,
    /// Passwords verified recently (Basic auth on every request of a batch script).
    credentials: credential_cache::CredentialCache,
    /// Callers already resolved from their credential (see [`principal_cache`]).
    principals: principal_cache::PrincipalCache,
    /// `[auth] credential_cache_secs`: how long a password's caller may be reused.
    password_ttl: Duration,
    /// Whether the server speaks HTTPS (for the token realm it advertises).
    pub tls: bool,
    /// `[auth] posix_groups`: memberships also come from the host's groups.
    host_groups: Option<Arc<posix_groups::HostGroups>>,
    /// `[auth] munge_match_names`: a MUNGE uid's host account name may claim a registry user
    /// that has no uid (never with admin rights).
    munge_match_names: bool,
}

impl Access {
    /// Loads (or creates) the token signing key in `data_dir`.
    pub fn new(
        config: &AuthConfig,
        db: Arc<Db>,
        data_dir: &Path,
        tls: bool,
    ) -> Result<Access, AuthError> {
        let key = TokenKey::load_or_create(&data_dir.join("token.key"))?;
        // Half the cores by default: a login storm then never takes every core from the token
        // and MUNGE traffic, which does not go through the pool.
        let hashing_threads = match config.password_hashing_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            n => n,
        };
        Ok(Access {
            policy: Policy {
                public: config.public.clone(),
                anonymous: config.anonymous,
            },
            db,
            key,
            munge: config.munge.then(|| {
                let m = Munge::new(&config.unmunge, config.munge_socket.clone());
                tracing::info!(
                    "MUNGE credentials decoded by {}",
                    if m.uses_library() {
                        "libmunge (munge_decode)"
                    } else {
                        "the unmunge program"
                    }
                );
                m
            }),
            limiter: Limiter::new(
                config.max_failed_logins,
                config.max_failed_logins_per_address,
                Duration::from_secs(config.failed_login_window_secs),
            ),
            token_ttl_secs: config.token_ttl_secs as i64,
            hashing: password::HashPool::new(hashing_threads),
            credentials: credential_cache::CredentialCache::new(Duration::from_secs(
                config.credential_cache_secs,
            ))?,
            principals: principal_cache::PrincipalCache::new()?,
            password_ttl: Duration::from_secs(config.credential_cache_secs),
            tls,
            host_groups: config
                .posix_groups
                .then(|| Arc::new(posix_groups::HostGroups::new(config.posix_groups_min_gid))),
            munge_match_names: config.munge_match_names,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Who is calling, from the `Authorization` header's value (`None`: no header).
    /// `read_route`: a GET/HEAD on `/v2` or `/sif`, where MUNGE is accepted. Failures are
    /// counted per client address and user name; over the limit: 429.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client: Option<IpAddr>,
        read_route: bool,
    ) -> Result<Principal, Error> {
        let Some(value) = authorization else {
            return Ok(Principal::anonymous());
        };
        let credential = Credential::parse(value)?;
        if let Credential::Munge(_) = credential {
            // Never remembered: each MUNGE credential works once.
            let p = self.identify(credential, client, read_route).await?;
            return self.with_host_groups(p).await;
        }
        // Read before the rows are: see `principal_cache`.
        let generation = self.db.identity_generation();
        let password_user = match &credential {
            Credential::Basic { user, secret } if !pat::looks_like_token(secret) => Some(user),
            _ => None,
        };
        if let Some(p) = self.principals.get(value, generation, meta::now()) {
            if let Some(user) = password_user {
                // A user locked out by failed password logins stays locked out for passwords,
                // remembered or not (tokens are never limited: see `unlimited`).
                self.within_limits(client, Some(user))?;
            }
            return Ok(p);
        }
        let ttl = match password_user {
            Some(_) => self.password_ttl,
            None => RESOLVED_TTL,
        };
        let p = self.identify(credential, client, read_route).await?;
        let p = self.with_host_groups(p).await?;
        self.principals.insert(value, generation, &p, ttl);
        Ok(p)
    }

    /// Adds the host groups of the caller's POSIX account (`[auth] posix_groups`) to the groups
    /// the registry itself knows (a registry membership, e.g. read-only, wins).
    async fn with_host_groups(&self, mut p: Principal) -> Result<Principal, Error> {
        let (Some(host), Some(user)) = (&self.host_groups, p.user.clone()) else {
            return Ok(p);
        };
        // NSS may ask a directory server: off the async threads.
        let (host, db) = (Arc::clone(host), Arc::clone(&self.db));
        let groups = blocking(move || {
            let groups = host.of(&user);
            // A host group named like a registry user is that user's namespace, never a group's.
            Ok(db.read_blocking(|c| {
                let mut kept = Vec::with_capacity(groups.len());
                for g in groups {
                    if meta::user_by_name(c, &g)?.is_none() {
                        kept.push(g);
                    }
                }
                Ok(kept)
            })?)
        })
        .await?;
        for group in groups {
            if !p.groups.iter().any(|m| m.group == group) {
                p.groups.push(Membership {
                    group,
                    read_only: false,
                });
            }
        }
        Ok(p)
    }

    async fn identify(
        &self,
        credential: Credential<'_>,
        client: Option<IpAddr>,
        read_route: bool,
    ) -> Result<Principal, Error> {
        match credential {
            Credential::Basic { user, secret } => self.login(&user, &secret, client).await,
            Credential::Bearer(token) if pat::looks_like_token(token) => {
                self.unlimited(client, None, self.token_principal(None, token))
                    .await
            }
            Credential::Bearer(token) => match self.key.verify(token, meta::now()) {
                // An expired token is routine (Docker fetches a new one), not a guess.
                Err(jwt::TokenError::Expired) => Err(Error::Unauthorized(
                    "bearer token expired: get a new one from /token".into(),
                )),
                verified => {
                    self.unlimited(client, None, self.bearer_principal(verified))
                        .await
                }
            },
            Credential::Munge(c) => self.munge_principal(c, client, read_route).await,
        }
    }

    /// A user name with a password or an access token (Basic auth, `/token`).
    pub async fn login(
        &self,
        user: &str,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, Error> {
        if pat::looks_like_token(secret) {
            self.unlimited(client, Some(user), self.token_principal(Some(user), secret))
                .await
        } else {
            self.guarded(client, Some(user), self.password_principal(user, secret))
                .await
        }
    }

    /// Runs one password check under the failed-login limiter (per user and client address,
    /// and per address: see [`limiter`]).
    async fn guarded(
        &self,
        client: Option<IpAddr>,
        user: Option<&str>,
        check: impl std::future::Future<Output = Result<Option<Principal>, Error>>,
    ) -> Result<Principal, Error> {
        self.within_limits(client, user)?;
        match check.await? {
            Some(p) => Ok(p),
            None => {
                self.limiter.failed(client, user);
                Err(refused(client, user))
            }
        }
    }

    /// 429 while `user` (or `client`) is over the failed-login limit.
    fn within_limits(&self, client: Option<IpAddr>, user: Option<&str>) -> Result<(), Error> {
        self.limiter
            .check(client, user)
            .map_err(|retry_after| Error::TooManyRequests { retry_after })
    }

    /// Runs one check of an unguessable credential (access token: 256 random bits; bearer
    /// token: HMAC-signed), outside the failed-login limiter: counting them would only let
    /// anyone who sends garbage lock a user's CI and batch jobs out, and guessing them is hopeless.
    async fn unlimited(
        &self,
        client: Option<IpAddr>,
        user: Option<&str>,
        check: impl std::future::Future<Output = Result<Option<Principal>, Error>>,
    ) -> Result<Principal, Error> {
        check.await?.ok_or_else(|| refused(client, user))
    }

    async fn password_principal(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal>, Error> {
        // The row first: a password verified recently against the hash stored now needs no
        // argon2 (see `credential_cache`), and the groups are wanted either way.
        // Through the bounded reader pool: a storm of logins must not open a connection each.
        let name = user.to_owned();
        let found = self
            .db
            .read(move |c| {
                let Some(row) = meta::user_by_name(c, &name)? else {
                    return Ok(None);
                };
                Ok(Some((row, meta::memberships(c, &name)?)))
            })
            .await?;
        let stored = found.as_ref().and_then(|(r, _)| r.password_hash.clone());
        if let (Some((row, groups)), Some(stored)) = (&found, &stored) {
            if self.credentials.hit(user, password, stored) {
                return Ok(Some(Principal::from_user(
                    row,
                    groups.clone(),
                    AuthMethod::Password,
                )));
            }
        }
        let (db, name, secret) = (Arc::clone(&self.db), user.to_owned(), password.to_owned());
        // The hash the password matched (after a bcrypt upgrade: the new one), if it did.
        let matched = self
            .hashing
            .run(move |mem| -> Result<Option<String>, Error> {
                let Some(stored) = stored else {
                    password::verify_dummy(&secret, mem);
                    return Ok(None);
                };
                match password::verify(&secret, &stored, mem) {
                    Verified::No => Ok(None),
                    Verified::Yes => Ok(Some(stored)),
                    Verified::YesRehash => {
                        // An imported bcrypt hash: replace it with argon2id now that we know the
                        // password.
                        let fresh = password::hash_in(&secret, mem)
                            .map_err(|e| Error::Internal(e.to_string()))?;
                        db.write_blocking(|tx| meta::set_password_hash(tx, &name, Some(&fresh)))?;
                        Ok(Some(fresh))
                    }
                }
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let (Some(matched), Some((row, groups))) = (matched, found) else {
            return Ok(None);
        };
        self.credentials.remember(user, password, &matched);
        Ok(Some(Principal::from_user(
            &row,
            groups,
            AuthMethod::Password,
        )))
    }

    /// Forgets the remembered password verifications of `user` (after a password change or the
    /// user's deletion through the admin API).
    pub fn forget_credentials(&self, user: &str) {
        self.credentials.forget_user(user);
    }

    async fn token_principal(
        &self,
        user: Option<&str>,
        token: &str,
    ) -> Result<Option<Principal>, Error> {
        let Some((id, secret)) = pat::parse(token) else {
            return Ok(None);
        };
        let (db, user, id, secret) = (
            Arc::clone(&self.db),
            user.map(str::to_owned),
            id.to_owned(),
            secret.to_owned(),
        );
        blocking(move || {
            let now = meta::now();
            let found = db.read_blocking(|c| {
                let Some(t) = meta::token_by_id(c, &id)? else {
                    return Ok(None);
                };
                let owner = meta::user_by_name(c, &t.user)?;
                let groups = meta::memberships(c, &t.user)?;
                Ok(owner.map(|o| (t, o, groups)))
            })?;
            let Some((t, owner, groups)) = found else {
                return Ok(None);
            };
            let valid = pat::matches(&t, &secret)
                && t.expires_at.is_none_or(|e| now < e)
                && user.as_deref().is_none_or(|u| u == t.user);
            if !valid {
                return Ok(None);
            }
            if t.last_used_at.is_none_or(|l| now - l >= TOKEN_TOUCH_SECS) {
                db.write_blocking(|tx| meta::touch_token(tx, &t.id, now))?;
            }
            let mut p = Principal::from_user(&owner, groups, AuthMethod::AccessToken);
            p.read_only = TokenScope::parse(&t.scope) != Some(TokenScope::ReadWrite);
            p.token_id = Some(t.id);
            p.expires_at = t.expires_at;
            Ok(Some(p))
        })
        .await
    }

    /// The holder of a verified bearer token: its subject as the database knows it now, narrowed
    /// to the token's grants, its read-only mark, its expiry and the access token it came from.
    async fn bearer_principal(
        &self,
        verified: Result<Claims, jwt::TokenError>,
    ) -> Result<Option<Principal>, Error> {
        let claims = match verified {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("bearer token refused: {e}");
                return Ok(None);
            }
        };
        // `token-read` alone marked read-only tokens before the `ro` claim existed.
        let read_only = claims.ro || claims.amr == "token-read";
        if claims.sub.is_empty() {
            return Ok(Some(Principal {
                grants: Some(claims.access),
                read_only,
                expires_at: Some(claims.exp),
                amr: Some(claims.amr),
                ..Principal::anonymous()
            }));
        }
        let (db, sub, pat_id) = (Arc::clone(&self.db), claims.sub.clone(), claims.pat.clone());
        let now = meta::now();
        let found = blocking(move || {
            Ok(db.read_blocking(|c| {
                let Some(row) = meta::user_by_name(c, &sub)? else {
                    return Ok(None);
                };
                // A token derived from an access token lives only as long as that token does.
                let source = match &pat_id {
                    None => None,
                    Some(id) => match meta::token_by_id(c, id)? {
                        Some(t) if t.user == sub && t.expires_at.is_none_or(|e| now < e) => Some(t),
                        _ => return Ok(None),
                    },
                };
                Ok(Some((row, meta::memberships(c, &sub)?, source)))
            })?)
        })
        .await?;
        // A user deleted since the token was issued loses access at once.
        Ok(found.map(|(row, groups, source)| {
            let mut p = Principal::from_user(&row, groups, AuthMethod::Bearer);
            p.grants = Some(claims.access);
            p.read_only = read_only
                || source
                    .as_ref()
                    .is_some_and(|t| TokenScope::parse(&t.scope) != Some(TokenScope::ReadWrite));
            p.expires_at = Some(
                source
                    .as_ref()
                    .and_then(|t| t.expires_at)
                    .map_or(claims.exp, |e| e.min(claims.exp)),
            );
            p.token_id = claims.pat;
            p.amr = Some(claims.amr);
            p
        }))
    }

    async fn munge_principal(
        &self,
        credential: &str,
        client: Option<IpAddr>,
        read_route: bool,
    ) -> Result<Principal, Error> {
        let Some(munge) = &self.munge else {
            return Err(Error::Unauthorized(
                "MUNGE authentication is not enabled on this registry ([auth] munge = true)".into(),
            ));
        };
        if !read_route {
            return Err(Error::Unauthorized(
                "MUNGE credentials are accepted for pulls only (GET and HEAD on /v2 and /sif)"
                    .into(),
            ));
        }
        // Not under the failed-login limiter: munged's MAC makes credentials unforgeable, and
        // all jobs on a compute node share its address, so one job's garbage must not lock out
        // the others.
        let uid = match munge.decode(credential).await {
            Ok(uid) => uid,
            Err(MungeError::Unavailable(why)) => {
                return Err(Error::Internal(format!("MUNGE: {why}")));
            }
            Err(e) => {
                tracing::info!(client = ?client, "MUNGE authentication failed: {e}");
                return Err(Error::Unauthorized(e.to_string()));
            }
        };
        let (db, match_names) = (Arc::clone(&self.db), self.munge_match_names);
        blocking(move || map_uid(&db, uid, match_names))
            .await?
            .map_err(|why| {
                // The reason stays in the log: it would tell the caller which registry users
                // and groups exist.
                tracing::info!(client = ?client, uid, "MUNGE credential not mapped: {why}");
                Error::Unauthorized(format!(
                    "uid {uid} is not mapped to a registry user: an administrator gives a \
                     registry user this uid (`hpc-registry user add NAME --uid {uid}`), or \
                     the site matches host account names ([auth] munge_match_names)"
                ))
            })
    }

    /// Checks `action` on `repo` (`None`: registry-wide routes such as `/v2/` and `_catalog`).
    ///
    /// Refusals: 401 for anonymous callers (and bearer tokens lacking the scope, so that Docker
    /// fetches a new one); `NAME_UNKNOWN` for a pull of something the caller may not read, exactly
    /// as for a repository that does not exist; 403 `DENIED` naming where the caller may push.
    pub fn check(
        &self,
        p: &Principal,
        repo: Option<&RepositoryName>,
        action: Action,
    ) -> Result<Principal, Error> {
        let Some(repo) = repo else {
            if p.is_authenticated() || self.policy.anonymous != Anonymous::None {
                return Ok(p.clone());
            }
            return Err(Error::Unauthorized(
                "authentication required: log in with `docker login`, or send Basic, Bearer or MUNGE credentials".into(),
            ));
        };
        if self.policy.may(p, action, repo) {
            return Ok(p.clone());
        }
        if !p.is_authenticated()
            || (p.grants.is_some() && self.policy.may(&p.without_grants(), action, repo))
        {
            return Err(Error::Unauthorized(format!(
                "authentication required to {} {repo}",
                action.as_str()
            )));
        }
        match action {
            Action::Pull => Err(Error::NameUnknown(format!(
                "repository {repo} is not known to this registry"
            ))),
            _ => Err(Error::Denied(self.denied_message(p, action, repo))),
        }
    }

    /// For reads: `Ok(false)` means "answer as if `repo` did not exist".
    pub fn readable(&self, p: &Principal, repo: &RepositoryName) -> Result<bool, Error> {
        match self.check(p, Some(repo), Action::Pull) {
            Ok(_) => Ok(true),
            Err(Error::NameUnknown(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `p` may do `action` on `repo` (no error shaping).
    pub fn may(&self, p: &Principal, action: Action, repo: &RepositoryName) -> bool {
        self.policy.may(p, action, repo)
    }

    /// Whether the caller may see `repository` in listings.
    pub fn may_list(&self, p: &Principal, repository: &str) -> bool {
        RepositoryName::parse(repository)
            .is_ok_and(|r| self.policy.may(&p.without_grants(), Action::Pull, &r))
    }

    fn denied_message(&self, p: &Principal, action: Action, repo: &RepositoryName) -> String {
        let who = p.user.as_deref().unwrap_or("anonymous");
        let verb = action.as_str();
        if p.read_only
            && self.policy.may(
                &Principal {
                    read_only: false,
                    ..p.clone()
                },
                action,
                repo,
            )
        {
            let what = match p.method {
                AuthMethod::Munge => "MUNGE credentials",
                _ => "this access token",
            };
            return format!(
                "{what} may only pull: {verb} on {repo} needs a read-write login or token"
            );
        }
        let spaces = self.policy.push_namespaces(p);
        let hint = match spaces.as_slice() {
            [] => "you may not push anywhere with this credential".to_owned(),
            [all] if all == "*" => "you may push anywhere".to_owned(),
            list => format!(
                "you may push to {}",
                list.iter()
                    .map(|n| format!("{n}/…"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!("{who} may not {verb} in {}/…: {hint}", repo.namespace())
    }

    /// A bearer token for `p` granting, of the requested `scopes`, only what the policy allows.
    ///
    /// The rule: a derived credential never exceeds its source. The grants are checked against
    /// `p` as it authenticated (a bearer token's own grants and a read-only mark included), so a
    /// token got with a token carries at most its actions; the read-only mark, the access token
    /// behind it and the first `amr` are copied into it; it expires no later than its source.
    pub fn issue_token(&self, p: &Principal, scopes: &[String]) -> Result<TokenResponse, Error> {
        let identity = p.without_grants();
        let mut access: Vec<Grant> = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')) {
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            // `repository(plugin):name:...` is the same resource type.
            let kind = kind.split('(').next().unwrap_or(kind);
            let granted: Vec<String> = match kind {
                "repository" => {
                    let Ok(repo) = RepositoryName::parse(name) else {
                        continue;
                    };
                    let wanted: Vec<Action> = actions
                        .split(',')
                        .flat_map(|a| match a {
                            "pull" => vec![Action::Pull],
                            "push" => vec![Action::Push],
                            "delete" => vec![Action::Delete],
                            "*" => vec![Action::Pull, Action::Push, Action::Delete],
                            _ => vec![],
                        })
                        .collect();
                    let mut out: Vec<String> = wanted
                        .into_iter()
                        .filter(|a| self.policy.may(p, *a, &repo))
                        .map(|a| a.as_str().to_owned())
                        .collect();
                    out.dedup();
                    out
                }
                "registry"
                    if name == "catalog"
                        && self.check(&identity, None, Action::Pull).is_ok()
                        && source_grants(p, "registry", "catalog") =>
                {
                    vec!["*".to_owned()]
                }
                _ => Vec::new(),
            };
            // Docker's spec lists every requested resource, with the actions actually granted.
            match access.iter_mut().find(|g| g.kind == kind && g.name == name) {
                Some(g) => {
                    for a in granted {
                        if !g.actions.contains(&a) {
                            g.actions.push(a);
                        }
                    }
                }
                None => access.push(Grant {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    actions: granted,
                }),
            }
        }
        let now = meta::now();
        let mut jti = [0u8; 12];
        random_bytes(&mut jti).map_err(|e| Error::Internal(e.to_string()))?;
        let amr = match (p.method, p.read_only, &p.amr) {
            (AuthMethod::Bearer, _, Some(first)) => first.clone(),
            (AuthMethod::AccessToken, true, _) => "token-read".to_owned(),
            (m, _, _) => m.as_str().to_owned(),
        };
        let exp = p.expires_at.map_or(now + self.token_ttl_secs, |e| {
            e.min(now + self.token_ttl_secs)
        });
        let claims = Claims {
            iss: jwt::SERVICE.into(),
            sub: p.user.clone().unwrap_or_default(),
            aud: jwt::SERVICE.into(),
            exp,
            nbf: now,
            iat: now,
            jti: hex::encode(jti),
            amr,
            access,
            ro: p.read_only,
            pat: p.token_id.clone(),
        };
        let token = self
            .key
            .sign(&claims)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(TokenResponse {
            access_token: token.clone(),
            token,
            expires_in: (exp - now).max(0),
            issued_at: rfc3339(now),
        })
    }

    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }
}

/// The refusal of a failed password or token login, logged (the audit trail records it too).
fn refused(client: Option<IpAddr>, user: Option<&str>) -> Error {
    tracing::info!(
        client = ?client,
        user = user.unwrap_or("-"),
        "authentication failed"
    );
    Error::Unauthorized(BAD_CREDENTIALS.into())
}

/// Whether `p`'s own grants (if it has any: a bearer token) include any action on `kind:name`.
fn source_grants(p: &Principal, kind: &str, name: &str) -> bool {
    p.grants.as_ref().is_none_or(|grants| {
        grants
            .iter()
            .any(|g| g.kind == kind && g.name == name && !g.actions.is_empty())
    })
}

/// Maps a MUNGE uid to a principal (`Err`: why it maps to nobody).
///
/// * the registry user given that uid (`user add --uid`): that user, admin rights included;
/// * else the host's account of that uid: a registry user of the same name without a uid is that
///   person only when the site says so (`[auth] munge_match_names`), and then never with admin
///   rights, since nothing but an explicit uid ties an administrator to a host account;
/// * a host account without a registry user owns `<name>/…`, unless that name is a registry
///   group's (the account would read the group's namespace) or a registry user's.
fn map_uid(db: &Arc<Db>, uid: u32, match_names: bool) -> Result<Result<Principal, String>, Error> {
    let principal = |row: &UserRow, db: &Arc<Db>| -> Result<Principal, Error> {
        let groups = db.read_blocking(|c| meta::memberships(c, &row.name))?;
        let mut p = Principal::from_user(row, groups, AuthMethod::Munge);
        p.uid = Some(uid);
        p.read_only = true;
        Ok(p)
    };
    if let Some(row) = db.read_blocking(|c| meta::user_by_uid(c, i64::from(uid)))? {
        return principal(&row, db).map(Ok);
    }
    let Some(name) = munge::host_user_name(uid) else {
        return Ok(Err(format!(
            "uid {uid} is neither a registry user nor a user of this host"
        )));
    };
    let (row, is_group) =
        db.read_blocking(|c| Ok((meta::user_by_name(c, &name)?, meta::group_exists(c, &name)?)))?;
    match row {
        Some(row) if row.uid.is_none() && match_names => {
            let mut p = principal(&row, db)?;
            p.admin = false;
            Ok(Ok(p))
        }
        Some(row) if row.uid.is_none() => Ok(Err(format!(
            "{name} on this host, but registry user {name} has no uid and \
             [auth] munge_match_names is off"
        ))),
        Some(_) => Ok(Err(format!(
            "uid {uid} ({name} on this host) is not registry user {name}'s uid"
        ))),
        None if is_group => Ok(Err(format!(
            "uid {uid} ({name} on this host) is named like the registry group {name}"
        ))),
        None => Ok(Ok(Principal {
            user: Some(name),
            uid: Some(uid),
            method: AuthMethod::Munge,
            read_only: true,
            ..Principal::anonymous()
        })),
    }
}

/// A credential, as an `Authorization` header value carries it.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A user name with a password or an access token.
    Basic {
        user: String,
        secret: String,
    },
    /// A token from `/token`, or an access token (`hpcr_…`).
    Bearer(&'a str),
    Munge(&'a str),
}

impl<'a> Credential<'a> {
    /// Parses `Basic`, `Bearer` and `MUNGE` credentials (the scheme in any case).
    pub fn parse(value: &'a str) -> Result<Credential<'a>, Error> {
        let (scheme, credential) = value.trim().split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let bad = || Error::Unauthorized("malformed Basic credentials".into());
                let bytes = STANDARD.decode(credential).map_err(|_| bad())?;
                let text = String::from_utf8(bytes).map_err(|_| bad())?;
                let (user, secret) = text.split_once(':').ok_or_else(bad)?;
                Ok(Credential::Basic {
                    user: user.to_owned(),
                    secret: secret.to_owned(),
                })
            }
            "bearer" => Ok(Credential::Bearer(credential)),
            "munge" => Ok(Credential::Munge(credential)),
            _ => Err(Error::Unauthorized(
                "unsupported authorization scheme: use Basic, Bearer or MUNGE".into(),
            )),
        }
    }

    /// The user name a Basic credential names, if it parses (for the audit trail of a failure).
    pub fn basic_user(value: &str) -> Option<String> {
        match Credential::parse(value) {
            Ok(Credential::Basic { user, .. }) => Some(user),
            _ => None,
        }
    }

    /// The kind of credential for the audit trail: `password`, `token` (an access token, as Basic
    /// secret or bearer), `bearer`, `munge`, or `other` for anything that does not parse.
    pub fn kind(value: &str) -> &'static str {
        match Credential::parse(value) {
            Ok(Credential::Basic { secret, .. }) if pat::looks_like_token(&secret) => "token",
            Ok(Credential::Basic { .. }) => "password",
            Ok(Credential::Bearer(t)) if pat::looks_like_token(t) => "token",
            Ok(Credential::Bearer(_)) => "bearer",
            Ok(Credential::Munge(_)) => "munge",
            Err(_) => match value.trim().split_once(' ').unwrap_or((value, "")).0 {
                s if s.eq_ignore_ascii_case("basic") => "password",
                _ => "other",
            },
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("authentication task failed: {e}")))?
}

/// `2024-01-02T03:04:05Z` for Unix seconds (Docker wants RFC 3339 in `issued_at`).
pub use crate::timefmt::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_644_843), "2026-11-25T22:14:03Z");
    }

    #[test]
    fn shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/hpc-registry.toml");
        let c = crate::config::Config::from_file(&path).unwrap();
        assert_eq!(c.auth.public, vec!["library"]);
        assert!(!c.auth.munge);
        assert_eq!(c.gc.grace, "2h");
        assert_eq!(c.scrub.rate, "200MiB");
        crate::lifecycle::Settings::from_config(&c.gc, &c.retention).unwrap();
    }

    /// A bearer token derived from an access token is refused once that token has expired,
    /// whatever its own `exp` says (revocation is covered by the integration suite; an expired
    /// access token cannot be made through the API, whose expiry counts in days).
    #[tokio::test]
    async fn derived_tokens_end_with_their_access_token() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let access =
            Access::new(&AuthConfig::default(), Arc::clone(&db), dir.path(), false).unwrap();
        let now = meta::now();
        let (_, mut row) =
            pat::generate("bob", "ci", TokenScope::ReadWrite, Some(now + 100), now).unwrap();
        db.write_blocking(|tx| {
            meta::insert_user(
                tx,
                &UserRow {
                    name: "bob".into(),
                    uid: None,
                    password_hash: None,
                    admin: false,
                    created_at: now,
                },
            )?;
            meta::insert_token(tx, &row)
        })
        .unwrap();
        let claims = Claims {
            iss: jwt::SERVICE.into(),
            sub: "bob".into(),
            aud: jwt::SERVICE.into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "j".into(),
            amr: "token".into(),
            access: Vec::new(),
            ro: false,
            pat: Some(row.id.clone()),
        };
        let p = access
            .bearer_principal(Ok(claims.clone()))
            .await
            .unwrap()
            .unwrap();
        // The access token's expiry caps the bearer token's.
        assert_eq!(p.expires_at, Some(now + 100));
        assert_eq!(p.token_id.as_deref(), Some(row.id.as_str()));
        let issued = access.issue_token(&p, &[]).unwrap();
        assert!(issued.expires_in <= 100, "{}", issued.expires_in);

        row.id = "0".repeat(12);
        row.expires_at = Some(now - 1);
        db.write_blocking(|tx| meta::insert_token(tx, &row))
            .unwrap();
        let expired = Claims {
            pat: Some(row.id.clone()),
            ..claims
        };
        assert!(access
            .bearer_principal(Ok(expired))
            .await
            .unwrap()
            .is_none());
    }

    #[test]
    fn basic_decoding() {
        let enc = STANDARD.encode("alice:pa:ss");
        assert_eq!(
            Credential::parse(&format!("Basic {enc}")).unwrap(),
            Credential::Basic {
                user: "alice".to_owned(),
                secret: "pa:ss".to_owned()
            }
        );
        assert!(Credential::parse("Basic !!").is_err());
        assert_eq!(
            Credential::basic_user(&format!("basic {enc}")).as_deref(),
            Some("alice")
        );
    }
}
