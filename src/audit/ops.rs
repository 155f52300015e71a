//! The audit record of a user, group or token operation ([`Op`]), shared by the admin API and the
//! offline CLI. Arguments that are secrets (passwords, htpasswd contents) never appear.

use super::Record;
use crate::auth::manage::Op;

/// `(action, reference)`: what was done and to whom (user, group, `group/user` or token id).
pub fn describe(op: &Op) -> (&'static str, Option<String>) {
    match op {
        Op::ListUsers => ("user.list", None),
        Op::AddUser { name, .. } => ("user.add", Some(name.clone())),
        Op::ModifyUser { name, .. } => ("user.mod", Some(name.clone())),
        Op::DeleteUser { name } => ("user.del", Some(name.clone())),
        Op::SetPassword { name, .. } => ("user.passwd", Some(name.clone())),
        Op::ImportHtpasswd { .. } => ("user.import-htpasswd", None),
        Op::ListGroups => ("group.list", None),
        Op::AddGroup { name } => ("group.add", Some(name.clone())),
        Op::DeleteGroup { name } => ("group.del", Some(name.clone())),
        Op::GroupMembers { group } => ("group.members", Some(group.clone())),
        Op::SetMember { group, user, .. } => ("group.member-set", Some(format!("{group}/{user}"))),
        Op::RemoveMember { group, user } => {
            ("group.member-remove", Some(format!("{group}/{user}")))
        }
        Op::ListTokens { user } => ("token.list", user.clone()),
        Op::CreateToken { user, .. } => ("token.create", user.clone()),
        Op::RevokeToken { id } => ("token.revoke", Some(id.clone())),
    }
}

/// The record of `op` run by the local operator (offline CLI): `user` is the OS account.
pub fn local_record(op: &Op, outcome: &str, detail: Option<String>) -> Record {
    let (action, reference) = describe(op);
    local_action(action, reference, outcome, detail)
}

/// The record of any command run by the local operator directly on the data directory
/// (offline `user`, `group`, `token`, `admin prune`, `admin repo delete`).
pub fn local_action(
    action: &str,
    reference: Option<String>,
    outcome: &str,
    detail: Option<String>,
) -> Record {
    let mut r = Record::new(action, outcome);
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    r.uid = Some(uid);
    r.user = crate::auth::munge::host_user_name(uid).or_else(|| Some(uid.to_string()));
    r.auth = Some("local".into());
    r.client = Some("local".into());
    r.reference = reference;
    r.detail = detail;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_records() {
        let op = Op::SetPassword {
            name: "alice".into(),
            password: "hunter2-secret".into(),
        };
        let r = local_record(&op, "ok", None);
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(r.action, "user.passwd");
        assert_eq!(r.reference.as_deref(), Some("alice"));
        assert_eq!(r.client.as_deref(), Some("local"));
        assert!(r.user.is_some() && r.uid.is_some());
    }
}
