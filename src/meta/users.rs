//! Users, groups, memberships and personal access tokens: the statements behind `src/auth`.
//! Booleans are stored as 0/1 BIGINTs and roles/scopes as text, so the same SQL runs on PostgreSQL.

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::Result;

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub uid: Option<i64>,
    /// PHC string (argon2id) or a bcrypt hash imported from htpasswd; `None`: no password login.
    pub password_hash: Option<String>,
    pub admin: bool,
    pub created_at: i64,
}

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub name: String,
    pub created_at: i64,
    pub members: i64,
}

/// One membership: `role` is `member` (read-write) or `read-only`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub group: String,
    pub user: String,
    pub role: String,
    pub added_at: i64,
}

/// A personal access token as stored (the secret itself never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub user: String,
    pub description: String,
    pub secret_sha256: String,
    /// `read` or `read-write`.
    pub scope: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

const USER_COLUMNS: &str = "name, uid, password_hash, is_admin, created_at";

fn user_row(r: &Row) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        uid: r.get(1)?,
        password_hash: r.get(2)?,
        admin: r.get::<_, i64>(3)? != 0,
        created_at: r.get(4)?,
    })
}

pub fn count_users(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?)
}

pub fn user_by_name(conn: &Connection, name: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))?
        .query_row([name], user_row)
        .optional()?)
}

pub fn user_by_uid(conn: &Connection, uid: i64) -> Result<Option<UserRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE uid = ?1"))?
        .query_row([uid], user_row)
        .optional()?)
}

pub fn list_users(conn: &Connection) -> Result<Vec<UserRow>> {
    let mut stmt = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
    let rows = stmt.query_map([], user_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Inserts a user; `false` if the name (or the uid) is taken.
pub fn insert_user(tx: &Transaction, user: &UserRow) -> Result<bool> {
    let n = tx.execute(
        "INSERT INTO users (name, uid, password_hash, is_admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        params![
            user.name,
            user.uid,
            user.password_hash,
            user.admin as i64,
            user.created_at
        ],
    )?;
    Ok(n == 1)
}

pub fn delete_user(tx: &Transaction, name: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM users WHERE name = ?1", [name])? == 1)
}

pub fn set_password_hash(tx: &Transaction, name: &str, hash: Option<&str>) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE name = ?1",
        params![name, hash],
    )? == 1)
}

pub fn group_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM user_groups WHERE name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Inserts a group; `false` if it exists.
pub fn insert_group(tx: &Transaction, name: &str, now: i64) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO user_groups (name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![name, now],
    )? == 1)
}

pub fn delete_group(tx: &Transaction, name: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM user_groups WHERE name = ?1", [name])? == 1)
}

pub fn list_groups(conn: &Connection) -> Result<Vec<GroupRow>> {
    let mut stmt = conn.prepare(
        "SELECT g.name, g.created_at, COUNT(m.user_name)
         FROM user_groups g LEFT JOIN group_members m ON m.group_name = g.name
         GROUP BY g.name, g.created_at ORDER BY g.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(GroupRow {
            name: r.get(0)?,
            created_at: r.get(1)?,
            members: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn member_row(r: &Row) -> rusqlite::Result<MemberRow> {
    Ok(MemberRow {
        group: r.get(0)?,
        user: r.get(1)?,
        role: r.get(2)?,
        added_at: r.get(3)?,
    })
}

pub fn group_members(conn: &Connection, group: &str) -> Result<Vec<MemberRow>> {
    member_rows(conn, MembersOf::Group, group)
}

/// The groups `user` belongs to.
pub fn memberships(conn: &Connection, user: &str) -> Result<Vec<MemberRow>> {
    member_rows(conn, MembersOf::User, user)
}

/// Which side of the membership table a listing is keyed by.
enum MembersOf {
    Group,
    User,
}

fn member_rows(conn: &Connection, of: MembersOf, name: &str) -> Result<Vec<MemberRow>> {
    let sql = match of {
        MembersOf::Group => {
            "SELECT group_name, user_name, role, added_at FROM group_members
             WHERE group_name = ?1 ORDER BY user_name"
        }
        MembersOf::User => {
            "SELECT group_name, user_name, role, added_at FROM group_members
             WHERE user_name = ?1 ORDER BY group_name"
        }
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([name], member_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Adds `user` to `group` or changes their role.
pub fn set_member(tx: &Transaction, group: &str, user: &str, role: &str, now: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO group_members (group_name, user_name, role, added_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (group_name, user_name) DO UPDATE SET role = excluded.role",
        params![group, user, role, now],
    )?;
    Ok(())
}

pub fn remove_member(tx: &Transaction, group: &str, user: &str) -> Result<bool> {
    Ok(tx.execute(
        "DELETE FROM group_members WHERE group_name = ?1 AND user_name = ?2",
        params![group, user],
    )? == 1)
}

const TOKEN_COLUMNS: &str =
    "id, user_name, description, secret_sha256, scope, created_at, expires_at, last_used_at";

fn token_row(r: &Row) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        user: r.get(1)?,
        description: r.get(2)?,
        secret_sha256: r.get(3)?,
        scope: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        last_used_at: r.get(7)?,
    })
}

pub fn insert_token(tx: &Transaction, t: &TokenRow) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO access_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            t.id,
            t.user,
            t.description,
            t.secret_sha256,
            t.scope,
            t.created_at,
            t.expires_at,
            t.last_used_at
        ],
    )?;
    Ok(())
}

pub fn token_by_id(conn: &Connection, id: &str) -> Result<Option<TokenRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE id = ?1"
        ))?
        .query_row([id], token_row)
        .optional()?)
}

/// Tokens of `user`, or of everybody.
pub fn list_tokens(conn: &Connection, user: Option<&str>) -> Result<Vec<TokenRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TOKEN_COLUMNS} FROM access_tokens WHERE ?1 IS NULL OR user_name = ?1
         ORDER BY user_name, created_at, id"
    ))?;
    let rows = stmt.query_map([user], token_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn delete_token(tx: &Transaction, id: &str) -> Result<bool> {
    Ok(tx.execute("DELETE FROM access_tokens WHERE id = ?1", [id])? == 1)
}

pub fn touch_token(tx: &Transaction, id: &str, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE access_tokens SET last_used_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Db;

    #[test]
    fn users_groups_tokens_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.db")).unwrap();
        let alice = UserRow {
            name: "alice".into(),
            uid: Some(1001),
            password_hash: Some("$argon2id$x".into()),
            admin: false,
            created_at: 1,
        };
        db.write_blocking(|tx| {
            assert!(insert_user(tx, &alice)?);
            assert!(!insert_user(tx, &alice)?, "duplicate name");
            let same_uid = UserRow {
                name: "other".into(),
                ..alice.clone()
            };
            assert!(!insert_user(tx, &same_uid)?, "duplicate uid");
            assert!(insert_group(tx, "proj-x", 2)?);
            set_member(tx, "proj-x", "alice", "member", 3)?;
            set_member(tx, "proj-x", "alice", "read-only", 4)?;
            insert_token(
                tx,
                &TokenRow {
                    id: "t1".into(),
                    user: "alice".into(),
                    description: "ci".into(),
                    secret_sha256: "ab".into(),
                    scope: "read".into(),
                    created_at: 5,
                    expires_at: None,
                    last_used_at: None,
                },
            )?;
            Ok(())
        })
        .unwrap();
        db.read_blocking(|c| {
            assert_eq!(user_by_uid(c, 1001)?.as_ref(), Some(&alice));
            assert_eq!(count_users(c)?, 1);
            let m = memberships(c, "alice")?;
            assert_eq!((m.len(), m[0].role.as_str()), (1, "read-only"));
            assert_eq!(list_groups(c)?[0].members, 1);
            assert_eq!(list_tokens(c, Some("alice"))?.len(), 1);
            assert_eq!(list_tokens(c, None)?.len(), 1);
            assert!(list_tokens(c, Some("bob"))?.is_empty());
            Ok(())
        })
        .unwrap();
        // Deleting the user takes memberships and tokens with it.
        db.write_blocking(|tx| delete_user(tx, "alice")).unwrap();
        db.read_blocking(|c| {
            assert!(group_members(c, "proj-x")?.is_empty());
            assert!(token_by_id(c, "t1")?.is_none());
            Ok(())
        })
        .unwrap();
    }
}
