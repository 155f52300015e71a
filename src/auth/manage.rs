//! User, group and token management: one [`Op`] type executed by [`execute`], used both by the
//! admin API of a running server and by the offline CLI (server stopped, data directory locked),
//! so the two can never disagree. Plain types only: the admin API's transport (method, path,
//! body) is `http::admin_ops`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::pat::{self, TokenScope};
use super::{password, AuthError, Principal};
use crate::meta::{self, Db, MetaError, NotifyChannels, UserRow};
use crate::registry::names::RepositoryName;

/// Longest user or group name (it is the first component of repository names).
const MAX_NAME: usize = 64;
/// Length of generated one-time passwords.
pub const GENERATED_PASSWORD_LEN: usize = 24;
/// Default lifetime of a personal access token.
pub const DEFAULT_TOKEN_DAYS: u32 = 90;

/// One management operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    ListUsers,
    AddUser {
        name: String,
        uid: Option<i64>,
        admin: bool,
        /// `None`: no password login (MUNGE or tokens only).
        password: Option<String>,
    },
    /// Changes a user's notification settings (`user mod`); `None` leaves one as it is.
    ModifyUser {
        name: String,
        email: Option<String>,
        /// Removes the address (`--no-email`).
        #[serde(default)]
        clear_email: bool,
        notify: Option<NotifyChannels>,
    },
    DeleteUser {
        name: String,
    },
    SetPassword {
        name: String,
        password: String,
    },
    /// Adds the bcrypt entries of an Apache htpasswd file as users (existing users are skipped).
    ImportHtpasswd {
        content: String,
    },
    ListGroups,
    AddGroup {
        name: String,
    },
    DeleteGroup {
        name: String,
    },
    GroupMembers {
        group: String,
    },
    SetMember {
        group: String,
        user: String,
        read_only: bool,
    },
    RemoveMember {
        group: String,
        user: String,
    },
    /// `user`: whose tokens (`None`: the caller's; an admin's `None` in offline mode: everybody's).
    ListTokens {
        user: Option<String>,
    },
    CreateToken {
        user: Option<String>,
        scope: TokenScope,
        /// Lifetime in days: `None` the default (90), `Some(0)` never expires.
        expires_days: Option<u32>,
        description: String,
    },
    RevokeToken {
        id: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: Option<i64>,
    pub admin: bool,
    pub password: bool,
    pub created_at: i64,
    pub groups: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// The channels the user is told by when a SIF is ready or failed.
    #[serde(default)]
    pub notify: NotifyChannels,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub created_at: i64,
    pub members: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user: String,
    pub read_only: bool,
    pub added_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub description: String,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// A created token: the secret appears here and nowhere else, ever.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub added: Vec<String>,
    /// `(line or user, reason)`.
    pub skipped: Vec<(String, String)>,
}

/// Who runs an operation: a principal of the running server, or the local operator (offline CLI,
/// who can write the data directory and is therefore trusted like an admin).
#[derive(Debug, Clone)]
pub enum Caller<'a> {
    Local,
    Remote(&'a Principal),
}

impl Caller<'_> {
    fn name(&self) -> Option<&str> {
        match self {
            Caller::Local => None,
            Caller::Remote(p) => p.user.as_deref(),
        }
    }

    fn is_admin(&self) -> bool {
        match self {
            Caller::Local => true,
            Caller::Remote(p) => p.admin && !p.read_only,
        }
    }
}

impl Op {
    /// The operation's name, safe to log (no arguments, so no passwords).
    pub fn name(&self) -> &'static str {
        match self {
            Op::ListUsers => "list-users",
            Op::AddUser { .. } => "add-user",
            Op::ModifyUser { .. } => "modify-user",
            Op::DeleteUser { .. } => "delete-user",
            Op::SetPassword { .. } => "set-password",
            Op::ImportHtpasswd { .. } => "import-htpasswd",
            Op::ListGroups => "list-groups",
            Op::AddGroup { .. } => "add-group",
            Op::DeleteGroup { .. } => "delete-group",
            Op::GroupMembers { .. } => "group-members",
            Op::SetMember { .. } => "set-member",
            Op::RemoveMember { .. } => "remove-member",
            Op::ListTokens { .. } => "list-tokens",
            Op::CreateToken { .. } => "create-token",
            Op::RevokeToken { .. } => "revoke-token",
        }
    }

    /// Whether the operation changes anything (read-only credentials may only run the others).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Op::ListUsers | Op::ListGroups | Op::GroupMembers { .. } | Op::ListTokens { .. }
        )
    }

    /// Admins may do everything; other users only manage their own password and tokens.
    fn permitted(&self, caller: &Caller) -> bool {
        if caller.is_admin() {
            return true;
        }
        let Caller::Remote(p) = caller else {
            return false;
        };
        if p.read_only && self.writes() {
            return false;
        }
        let me = p.user.as_deref();
        match self {
            Op::SetPassword { name, .. } | Op::ModifyUser { name, .. } => me == Some(name.as_str()),
            Op::ListTokens { user } | Op::CreateToken { user, .. } => {
                user.is_none() || user.as_deref() == me
            }
            // Ownership is checked against the stored token.
            Op::RevokeToken { .. } => me.is_some(),
            _ => false,
        }
    }
}

/// Runs `op` for `caller`; the result is the JSON the admin API answers with.
pub fn execute(db: &Arc<Db>, caller: &Caller, op: Op) -> Result<serde_json::Value, ManageError> {
    if !op.permitted(caller) {
        return Err(ManageError::Forbidden(
            "only an administrator may do this (users may change their own password, notification settings and tokens)"
                .into(),
        ));
    }
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| ManageError::Invalid(format!("cannot encode the result: {e}")))
    };
    match op {
        Op::ListUsers => to_json(serde_json::to_value(list_users(db)?)),
        Op::AddUser {
            name,
            uid,
            admin,
            password,
        } => to_json(serde_json::to_value(add_user(
            db,
            &name,
            uid,
            admin,
            password.as_deref(),
        )?)),
        Op::ModifyUser {
            name,
            email,
            clear_email,
            notify,
        } => {
            let change = super::contact::ContactChange {
                email: match (email, clear_email) {
                    (Some(_), true) => {
                        return Err(ManageError::Invalid(
                            "--email and --no-email contradict each other".into(),
                        ))
                    }
                    (Some(a), false) => Some(Some(a)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                notify,
            };
            if !super::contact::apply(db, &name, &change)? {
                return Err(no_user(&name));
            }
            let info = list_users(db)?.into_iter().find(|u| u.name == name);
            to_json(serde_json::to_value(info.ok_or_else(|| no_user(&name))?))
        }
        Op::DeleteUser { name } => {
            if db.write_blocking(|tx| meta::delete_user(tx, &name))? {
                Ok(serde_json::json!({ "deleted": name }))
            } else {
                Err(no_user(&name))
            }
        }
        Op::SetPassword { name, password } => {
            check_password(&password)?;
            let hash = password::hash(&password)?;
            if db.write_blocking(|tx| meta::set_password_hash(tx, &name, Some(&hash)))? {
                Ok(serde_json::json!({ "updated": name }))
            } else {
                Err(no_user(&name))
            }
        }
        Op::ImportHtpasswd { content } => {
            to_json(serde_json::to_value(import_htpasswd(db, &content)?))
        }
        Op::ListGroups => {
            let rows = db.read_blocking(meta::list_groups)?;
            let groups: Vec<GroupInfo> = rows
                .into_iter()
                .map(|g| GroupInfo {
                    name: g.name,
                    created_at: g.created_at,
                    members: g.members,
                })
                .collect();
            to_json(serde_json::to_value(groups))
        }
        Op::AddGroup { name } => {
            check_name(&name)?;
            let now = meta::now();
            db.write_blocking(|tx| {
                if meta::user_by_name(tx, &name)?.is_some() {
                    return Ok(Err(ManageError::Conflict(format!(
                        "{name} is a user: users and groups share the namespace of repository names"
                    ))));
                }
                Ok(if meta::insert_group(tx, &name, now)? {
                    Ok(())
                } else {
                    Err(ManageError::Conflict(format!("group {name} exists")))
                })
            })??;
            Ok(serde_json::json!({ "added": name }))
        }
        Op::DeleteGroup { name } => {
            if db.write_blocking(|tx| meta::delete_group(tx, &name))? {
                Ok(serde_json::json!({ "deleted": name }))
            } else {
                Err(no_group(&name))
            }
        }
        Op::GroupMembers { group } => {
            let g = group.clone();
            let rows = db.read_blocking(move |c| {
                Ok(if meta::group_exists(c, &g)? {
                    Some(meta::group_members(c, &g)?)
                } else {
                    None
                })
            })?;
            let members: Vec<MemberInfo> = rows
                .ok_or_else(|| no_group(&group))?
                .into_iter()
                .map(|m| MemberInfo {
                    read_only: m.role == ROLE_READ_ONLY,
                    user: m.user,
                    added_at: m.added_at,
                })
                .collect();
            to_json(serde_json::to_value(members))
        }
        Op::SetMember {
            group,
            user,
            read_only,
        } => {
            let role = if read_only {
                ROLE_READ_ONLY
            } else {
                ROLE_MEMBER
            };
            let now = meta::now();
            db.write_blocking(|tx| {
                if !meta::group_exists(tx, &group)? {
                    return Ok(Err(no_group(&group)));
                }
                if meta::user_by_name(tx, &user)?.is_none() {
                    return Ok(Err(no_user(&user)));
                }
                meta::set_member(tx, &group, &user, role, now)?;
                Ok(Ok(()))
            })??;
            Ok(serde_json::json!({ "group": group, "user": user, "read_only": read_only }))
        }
        Op::RemoveMember { group, user } => {
            if db.write_blocking(|tx| meta::remove_member(tx, &group, &user))? {
                Ok(serde_json::json!({ "group": group, "removed": user }))
            } else {
                Err(ManageError::NotFound(format!(
                    "{user} is not a member of group {group}"
                )))
            }
        }
        Op::ListTokens { user } => {
            let user = match (user, caller) {
                (Some(u), _) => Some(u),
                (None, Caller::Local) => None,
                (None, Caller::Remote(p)) => p.user.clone(),
            };
            let rows = db.read_blocking(|c| meta::list_tokens(c, user.as_deref()))?;
            let tokens: Vec<TokenInfo> = rows.into_iter().map(token_info).collect();
            to_json(serde_json::to_value(tokens))
        }
        Op::CreateToken {
            user,
            scope,
            expires_days,
            description,
        } => {
            let user = user
                .or_else(|| caller.name().map(str::to_owned))
                .ok_or_else(|| ManageError::Invalid("name the token's user (--user)".into()))?;
            to_json(serde_json::to_value(create_token(
                db,
                &user,
                scope,
                expires_days,
                &description,
            )?))
        }
        Op::RevokeToken { id } => {
            let owner = if caller.is_admin() {
                None
            } else {
                caller.name().map(str::to_owned)
            };
            let deleted = db.write_blocking(|tx| {
                let Some(row) = meta::token_by_id(tx, &id)? else {
                    return Ok(false);
                };
                if owner.as_ref().is_some_and(|o| o != &row.user) {
                    // Someone else's token looks exactly like a missing one.
                    return Ok(false);
                }
                meta::delete_token(tx, &id)
            })?;
            if deleted {
                Ok(serde_json::json!({ "revoked": id }))
            } else {
                Err(ManageError::NotFound(format!("no token {id}")))
            }
        }
    }
}

pub const ROLE_MEMBER: &str = "member";
pub const ROLE_READ_ONLY: &str = "read-only";

fn no_user(name: &str) -> ManageError {
    ManageError::NotFound(format!("no user {name}"))
}

fn no_group(name: &str) -> ManageError {
    ManageError::NotFound(format!("no group {name}"))
}

/// User and group names become the first component of repository names, so they follow its rules.
pub fn check_name(name: &str) -> Result<(), ManageError> {
    let valid =
        name.len() <= MAX_NAME && !name.contains('/') && RepositoryName::parse(name).is_ok();
    if valid {
        Ok(())
    } else {
        Err(ManageError::Invalid(format!(
            "invalid name {name:?}: use at most {MAX_NAME} characters of [a-z0-9] joined by '.', '_', '__' or '-' (it becomes the namespace {name}/...)"
        )))
    }
}

fn check_password(password: &str) -> Result<(), ManageError> {
    if password.chars().count() < 8 {
        return Err(ManageError::Invalid(
            "passwords need at least 8 characters".into(),
        ));
    }
    Ok(())
}

fn list_users(db: &Arc<Db>) -> Result<Vec<UserInfo>, ManageError> {
    Ok(db.read_blocking(|c| {
        meta::list_users(c)?
            .into_iter()
            .map(|u| {
                let groups = meta::memberships(c, &u.name)?
                    .into_iter()
                    .map(|m| {
                        if m.role == ROLE_READ_ONLY {
                            format!("{} (read-only)", m.group)
                        } else {
                            m.group
                        }
                    })
                    .collect();
                let contact = meta::user_contact(c, &u.name)?.unwrap_or_default();
                Ok(UserInfo {
                    name: u.name,
                    uid: u.uid,
                    admin: u.admin,
                    password: u.password_hash.is_some(),
                    created_at: u.created_at,
                    groups,
                    email: contact.email,
                    notify: contact.notify,
                })
            })
            .collect::<Result<Vec<_>, MetaError>>()
    })?)
}

/// Creates a user; `password` is hashed with argon2id before the write transaction starts.
pub fn add_user(
    db: &Arc<Db>,
    name: &str,
    uid: Option<i64>,
    admin: bool,
    password: Option<&str>,
) -> Result<UserInfo, ManageError> {
    check_name(name)?;
    if uid.is_some_and(|u| !(0..=i64::from(u32::MAX)).contains(&u)) {
        return Err(ManageError::Invalid("uid out of range".into()));
    }
    let hash = match password {
        Some(p) => {
            check_password(p)?;
            Some(password::hash(p)?)
        }
        None => None,
    };
    insert_user_row(db, name, uid, admin, hash)
}

fn insert_user_row(
    db: &Arc<Db>,
    name: &str,
    uid: Option<i64>,
    admin: bool,
    password_hash: Option<String>,
) -> Result<UserInfo, ManageError> {
    let row = UserRow {
        name: name.to_owned(),
        uid,
        password_hash,
        admin,
        created_at: meta::now(),
    };
    db.write_blocking(|tx| {
        if meta::user_by_name(tx, name)?.is_some() {
            return Ok(Err(ManageError::Conflict(format!("user {name} exists"))));
        }
        if meta::group_exists(tx, name)? {
            return Ok(Err(ManageError::Conflict(format!(
                "{name} is a group: users and groups share the namespace of repository names"
            ))));
        }
        if let Some(uid) = uid {
            if let Some(other) = meta::user_by_uid(tx, uid)? {
                return Ok(Err(ManageError::Conflict(format!(
                    "uid {uid} belongs to user {}",
                    other.name
                ))));
            }
        }
        meta::insert_user(tx, &row)?;
        Ok(Ok(()))
    })??;
    Ok(UserInfo {
        name: row.name,
        uid: row.uid,
        admin: row.admin,
        password: row.password_hash.is_some(),
        created_at: row.created_at,
        groups: Vec::new(),
        email: None,
        notify: NotifyChannels::None,
    })
}

/// `name:hash` lines; bcrypt hashes are kept as they are (and upgraded at the next login).
fn import_htpasswd(db: &Arc<Db>, content: &str) -> Result<ImportReport, ManageError> {
    let mut report = ImportReport::default();
    for (n, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            report
                .skipped
                .push((format!("line {}", n + 1), "not name:hash".into()));
            continue;
        };
        if !password::is_bcrypt(hash) {
            report.skipped.push((
                name.to_owned(),
                "not a bcrypt hash (re-create it with `htpasswd -B`)".into(),
            ));
            continue;
        }
        match insert_user_row(db, name, None, false, Some(hash.to_owned())) {
            Ok(_) => report.added.push(name.to_owned()),
            Err(ManageError::Conflict(why) | ManageError::Invalid(why)) => {
                report.skipped.push((name.to_owned(), why))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

fn token_info(t: meta::TokenRow) -> TokenInfo {
    TokenInfo {
        id: t.id,
        user: t.user,
        description: t.description,
        scope: t.scope,
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
    }
}

fn create_token(
    db: &Arc<Db>,
    user: &str,
    scope: TokenScope,
    expires_days: Option<u32>,
    description: &str,
) -> Result<CreatedToken, ManageError> {
    let now = meta::now();
    let days = expires_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    let expires_at = (days > 0).then(|| now + i64::from(days) * 86_400);
    let (secret, row) = pat::generate(user, description, scope, expires_at, now)?;
    let stored = row.clone();
    db.write_blocking(|tx| {
        if meta::user_by_name(tx, user)?.is_none() {
            return Ok(Err(no_user(user)));
        }
        meta::insert_token(tx, &stored)?;
        Ok(Ok(()))
    })??;
    Ok(CreatedToken {
        token: secret,
        info: token_info(row),
    })
}

/// First start: with no users at all, creates `admin` with a random password and returns it (the
/// caller prints it once). `None` when users exist.
pub fn ensure_first_admin(db: &Arc<Db>) -> Result<Option<String>, ManageError> {
    if db.read_blocking(meta::count_users)? > 0 {
        return Ok(None);
    }
    let password = password::random_password(GENERATED_PASSWORD_LEN)?;
    add_user(db, "admin", None, true, Some(&password))?;
    Ok(Some(password))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn all_ops() -> Vec<Op> {
        vec![
            Op::ListUsers,
            Op::AddUser {
                name: "alice".into(),
                uid: Some(1000),
                admin: false,
                password: Some("pw pw pw pw".into()),
            },
            Op::DeleteUser {
                name: "alice".into(),
            },
            Op::ModifyUser {
                name: "alice".into(),
                email: Some("alice@example.org".into()),
                clear_email: false,
                notify: Some(NotifyChannels::Both),
            },
            Op::ModifyUser {
                name: "alice".into(),
                email: None,
                clear_email: true,
                notify: None,
            },
            Op::SetPassword {
                name: "alice".into(),
                password: "x".into(),
            },
            Op::ImportHtpasswd {
                content: "a:$2y$x".into(),
            },
            Op::ListGroups,
            Op::AddGroup {
                name: "proj-x".into(),
            },
            Op::DeleteGroup {
                name: "proj-x".into(),
            },
            Op::GroupMembers {
                group: "proj-x".into(),
            },
            Op::SetMember {
                group: "proj-x".into(),
                user: "bob".into(),
                read_only: true,
            },
            Op::RemoveMember {
                group: "proj-x".into(),
                user: "bob".into(),
            },
            Op::ListTokens {
                user: Some("bob".into()),
            },
            Op::ListTokens { user: None },
            Op::CreateToken {
                user: None,
                scope: TokenScope::Read,
                expires_days: Some(3),
                description: "ci".into(),
            },
            Op::RevokeToken {
                id: "0123456789ab".into(),
            },
        ]
    }

    #[test]
    fn operations_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let first = ensure_first_admin(&db).unwrap().unwrap();
        assert_eq!(first.len(), GENERATED_PASSWORD_LEN);
        assert!(ensure_first_admin(&db).unwrap().is_none());
        let local = Caller::Local;
        execute(
            &db,
            &local,
            Op::AddUser {
                name: "alice".into(),
                uid: Some(1000),
                admin: false,
                password: Some("alice-password".into()),
            },
        )
        .unwrap();
        // Same uid, same name, a group of the same name, an invalid name: all refused.
        for op in [
            Op::AddUser {
                name: "alice2".into(),
                uid: Some(1000),
                admin: false,
                password: None,
            },
            Op::AddUser {
                name: "alice".into(),
                uid: None,
                admin: false,
                password: None,
            },
            Op::AddGroup {
                name: "alice".into(),
            },
        ] {
            assert!(matches!(
                execute(&db, &local, op),
                Err(ManageError::Conflict(_))
            ));
        }
        assert!(matches!(
            execute(
                &db,
                &local,
                Op::AddUser {
                    name: "Alice".into(),
                    uid: None,
                    admin: false,
                    password: None
                }
            ),
            Err(ManageError::Invalid(_))
        ));
        let alice = Principal {
            user: Some("alice".into()),
            method: super::super::AuthMethod::Password,
            ..Principal::anonymous()
        };
        let as_alice = Caller::Remote(&alice);
        assert!(matches!(
            execute(&db, &as_alice, Op::ListUsers),
            Err(ManageError::Forbidden(_))
        ));
        let created = execute(
            &db,
            &as_alice,
            Op::CreateToken {
                user: None,
                scope: TokenScope::Read,
                expires_days: None,
                description: "ci".into(),
            },
        )
        .unwrap();
        let created: CreatedToken = serde_json::from_value(created).unwrap();
        assert_eq!(created.info.user, "alice");
        assert!(created.info.expires_at.is_some());
        assert!(matches!(
            execute(
                &db,
                &as_alice,
                Op::CreateToken {
                    user: Some("admin".into()),
                    scope: TokenScope::Read,
                    expires_days: None,
                    description: String::new(),
                }
            ),
            Err(ManageError::Forbidden(_))
        ));
        let report = execute(
            &db,
            &local,
            Op::ImportHtpasswd {
                content: format!(
                    "# comment\ncarol:{}\ndave:$apr1$xyz\nalice:{}\n",
                    bcrypt::hash("carol-password", 4).unwrap(),
                    bcrypt::hash("x", 4).unwrap()
                ),
            },
        )
        .unwrap();
        let report: ImportReport = serde_json::from_value(report).unwrap();
        assert_eq!(report.added, vec!["carol"]);
        assert_eq!(report.skipped.len(), 2);
    }
}
