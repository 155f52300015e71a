//! The admin API's transport of the user/group/token operations: each [`Op`] as a method, a
//! path and a JSON body, and back. One table both ways, so the CLI (client) and the admin API
//! (server) cannot disagree; the operations themselves are plain types in `auth::manage`.

use axum::http::Method;
use serde::Deserialize;

use crate::auth::manage::{ManageError, Op};
use crate::auth::pat::TokenScope;

/// [`Op`] in the admin API.
pub trait OpRoute: Sized {
    /// Method, path and JSON body of this operation in the admin API.
    fn to_http(&self) -> (Method, String, Option<serde_json::Value>);
    /// The operation an admin API request asks for; `None` if it names none.
    fn from_http(
        method: &Method,
        path: &str,
        query_user: Option<String>,
        body: &[u8],
    ) -> Result<Option<Self>, ManageError>;
}

impl OpRoute for Op {
    fn to_http(&self) -> (Method, String, Option<serde_json::Value>) {
        use serde_json::json;
        let seg = crate::urlcode::encode;
        match self {
            Op::ListUsers => (Method::GET, "/admin/users".into(), None),
            Op::AddUser {
                name,
                uid,
                admin,
                password,
            } => (
                Method::POST,
                "/admin/users".into(),
                Some(json!({"name": name, "uid": uid, "admin": admin, "password": password})),
            ),
            Op::DeleteUser { name } => {
                (Method::DELETE, format!("/admin/users/{}", seg(name)), None)
            }
            Op::ModifyUser {
                name,
                email,
                clear_email,
                notify,
            } => (
                Method::PATCH,
                format!("/admin/users/{}", seg(name)),
                Some(json!({"email": email, "clear_email": clear_email, "notify": notify})),
            ),
            Op::SetPassword { name, password } => (
                Method::PUT,
                format!("/admin/users/{}/password", seg(name)),
                Some(json!({ "password": password })),
            ),
            Op::ImportHtpasswd { content } => (
                Method::POST,
                "/admin/users/import-htpasswd".into(),
                Some(json!({ "content": content })),
            ),
            Op::ListGroups => (Method::GET, "/admin/groups".into(), None),
            Op::AddGroup { name } => (
                Method::POST,
                "/admin/groups".into(),
                Some(json!({ "name": name })),
            ),
            Op::DeleteGroup { name } => {
                (Method::DELETE, format!("/admin/groups/{}", seg(name)), None)
            }
            Op::GroupMembers { group } => (
                Method::GET,
                format!("/admin/groups/{}/members", seg(group)),
                None,
            ),
            Op::SetMember {
                group,
                user,
                read_only,
            } => (
                Method::PUT,
                format!("/admin/groups/{}/members/{}", seg(group), seg(user)),
                Some(json!({ "read_only": read_only })),
            ),
            Op::RemoveMember { group, user } => (
                Method::DELETE,
                format!("/admin/groups/{}/members/{}", seg(group), seg(user)),
                None,
            ),
            Op::ListTokens { user } => {
                let q = user
                    .as_deref()
                    .map(|u| format!("?user={}", seg(u)))
                    .unwrap_or_default();
                (Method::GET, format!("/admin/tokens{q}"), None)
            }
            Op::CreateToken {
                user,
                scope,
                expires_days,
                description,
            } => (
                Method::POST,
                "/admin/tokens".into(),
                Some(json!({
                    "user": user, "scope": scope, "expires_days": expires_days,
                    "description": description,
                })),
            ),
            Op::RevokeToken { id } => (Method::DELETE, format!("/admin/tokens/{}", seg(id)), None),
        }
    }

    fn from_http(
        method: &Method,
        path: &str,
        query_user: Option<String>,
        body: &[u8],
    ) -> Result<Option<Op>, ManageError> {
        #[derive(Deserialize)]
        struct AddUser {
            name: String,
            uid: Option<i64>,
            #[serde(default)]
            admin: bool,
            password: Option<String>,
        }
        #[derive(Deserialize)]
        struct ModifyUser {
            email: Option<String>,
            #[serde(default)]
            clear_email: bool,
            notify: Option<crate::meta::NotifyChannels>,
        }
        #[derive(Deserialize)]
        struct Password {
            password: String,
        }
        #[derive(Deserialize)]
        struct Content {
            content: String,
        }
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        #[derive(Deserialize)]
        struct Member {
            #[serde(default)]
            read_only: bool,
        }
        #[derive(Deserialize)]
        struct CreateToken {
            user: Option<String>,
            #[serde(default)]
            scope: TokenScope,
            expires_days: Option<u32>,
            #[serde(default)]
            description: String,
        }
        fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ManageError> {
            serde_json::from_slice(body)
                .map_err(|e| ManageError::Invalid(format!("invalid request body: {e}")))
        }
        let segs: Vec<String> = path
            .trim_start_matches("/admin/")
            .split('/')
            .map(crate::urlcode::decode_segment)
            .collect::<Result<_, _>>()
            .map_err(|e| ManageError::Invalid(e.to_string()))?;
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.clone();
        let op = match (m, segs.as_slice()) {
            (Method::GET, ["users"]) => Op::ListUsers,
            (Method::POST, ["users"]) => {
                let b: AddUser = json(body)?;
                Op::AddUser {
                    name: b.name,
                    uid: b.uid,
                    admin: b.admin,
                    password: b.password,
                }
            }
            (Method::POST, ["users", "import-htpasswd"]) => Op::ImportHtpasswd {
                content: json::<Content>(body)?.content,
            },
            (Method::DELETE, ["users", name]) => Op::DeleteUser {
                name: (*name).to_owned(),
            },
            (Method::PATCH, ["users", name]) => {
                let b: ModifyUser = json(body)?;
                Op::ModifyUser {
                    name: (*name).to_owned(),
                    email: b.email,
                    clear_email: b.clear_email,
                    notify: b.notify,
                }
            }
            (Method::PUT, ["users", name, "password"]) => Op::SetPassword {
                name: (*name).to_owned(),
                password: json::<Password>(body)?.password,
            },
            (Method::GET, ["groups"]) => Op::ListGroups,
            (Method::POST, ["groups"]) => Op::AddGroup {
                name: json::<Name>(body)?.name,
            },
            (Method::DELETE, ["groups", name]) => Op::DeleteGroup {
                name: (*name).to_owned(),
            },
            (Method::GET, ["groups", group, "members"]) => Op::GroupMembers {
                group: (*group).to_owned(),
            },
            (Method::PUT, ["groups", group, "members", user]) => Op::SetMember {
                group: (*group).to_owned(),
                user: (*user).to_owned(),
                read_only: json::<Member>(body)?.read_only,
            },
            (Method::DELETE, ["groups", group, "members", user]) => Op::RemoveMember {
                group: (*group).to_owned(),
                user: (*user).to_owned(),
            },
            (Method::GET, ["tokens"]) => Op::ListTokens { user: query_user },
            (Method::POST, ["tokens"]) => {
                let b: CreateToken = json(body)?;
                Op::CreateToken {
                    user: b.user,
                    scope: b.scope,
                    expires_days: b.expires_days,
                    description: b.description,
                }
            }
            (Method::DELETE, ["tokens", id]) => Op::RevokeToken {
                id: (*id).to_owned(),
            },
            _ => return Ok(None),
        };
        Ok(Some(op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::manage::tests::all_ops;

    #[test]
    fn http_mapping_round_trips() {
        for op in all_ops() {
            let (method, path, body) = op.to_http();
            let (path, user) = match path.split_once("?user=") {
                Some((p, u)) => (
                    p.to_owned(),
                    Some(crate::urlcode::decode_segment(u).unwrap()),
                ),
                None => (path, None),
            };
            let body = body
                .map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default();
            let back = Op::from_http(&method, &path, user, &body).unwrap();
            assert_eq!(back.as_ref(), Some(&op), "{method} {path}");
        }
    }
}
