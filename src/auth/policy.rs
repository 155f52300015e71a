//! The permission model, in one function: [`Policy::may`]. Every route's decision ends here.
//!
//! * `<user>/…`: read-write for that user;
//! * `<group>/…`: read-write for members, read-only for read-only members;
//! * public namespaces (`[auth] public`, default `library`): readable by every authenticated user,
//!   writable by admins (a user or group of the same name gets nothing more);
//! * admins: everything;
//! * anonymous callers: what `[auth] anonymous` allows (nothing by default), and every caller gets
//!   at least that;
//! * the credential can only narrow this: a read-only access token or a MUNGE credential pulls
//!   only, a bearer token only what it lists.

use super::{Action, Anonymous, Principal};
use crate::registry::names::RepositoryName;

#[derive(Debug, Clone)]
pub struct Policy {
    pub public: Vec<String>,
    pub anonymous: Anonymous,
}

impl Policy {
    /// Whether `p` may do `action` on `repo`.
    pub fn may(&self, p: &Principal, action: Action, repo: &RepositoryName) -> bool {
        credential_allows(p, action, repo)
            && (self.anonymous_may(action) || self.identity_may(p, action, repo.namespace()))
    }

    /// What anonymous callers may do anywhere.
    pub fn anonymous_may(&self, action: Action) -> bool {
        match self.anonymous {
            Anonymous::ReadWrite => true,
            Anonymous::Read => action == Action::Pull,
            Anonymous::None => false,
        }
    }

    /// The rights of the identity alone, whatever credential it used.
    fn identity_may(&self, p: &Principal, action: Action, namespace: &str) -> bool {
        let Some(user) = p.user.as_deref() else {
            return false;
        };
        if p.admin {
            return true;
        }
        if self.public.iter().any(|n| n == namespace) {
            return action == Action::Pull;
        }
        if user == namespace {
            return true;
        }
        p.groups
            .iter()
            .any(|g| g.group == namespace && (action == Action::Pull || !g.read_only))
    }

    /// The namespaces `p` may push to, for the message of a refused push.
    pub fn push_namespaces(&self, p: &Principal) -> Vec<String> {
        if p.read_only || (p.user.is_none() && !self.anonymous_may(Action::Push)) {
            return Vec::new();
        }
        if p.admin || self.anonymous_may(Action::Push) {
            return vec!["*".to_owned()];
        }
        let mut out: Vec<String> = p
            .user
            .iter()
            .filter(|u| !self.public.contains(u))
            .cloned()
            .chain(
                p.groups
                    .iter()
                    .filter(|g| !g.read_only && !self.public.contains(&g.group))
                    .map(|g| g.group.clone()),
            )
            .collect();
        out.dedup();
        out
    }
}

/// The credential's own limits: read-only tokens and MUNGE pull only; a bearer token allows only
/// the actions it lists.
fn credential_allows(p: &Principal, action: Action, repo: &RepositoryName) -> bool {
    if p.read_only && action != Action::Pull {
        return false;
    }
    match &p.grants {
        None => true,
        Some(grants) => grants.iter().any(|g| {
            g.kind == "repository"
                && g.name == repo.as_str()
                && g.actions.iter().any(|a| a == "*" || a == action.as_str())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::jwt::Grant;
    use super::super::{AuthMethod, Membership};
    use super::*;

    fn user(name: &str) -> Principal {
        Principal {
            user: Some(name.to_owned()),
            method: AuthMethod::Password,
            ..Principal::anonymous()
        }
    }

    fn policy(anonymous: Anonymous) -> Policy {
        Policy {
            public: vec!["library".to_owned()],
            anonymous,
        }
    }

    #[test]
    fn permission_table() {
        use Action::*;
        let alice = user("alice");
        let bob = user("bob");
        let carol = Principal {
            groups: vec![Membership {
                group: "proj-x".into(),
                read_only: false,
            }],
            ..user("carol")
        };
        let dave = Principal {
            groups: vec![Membership {
                group: "proj-x".into(),
                read_only: true,
            }],
            ..user("dave")
        };
        let admin = Principal {
            admin: true,
            ..user("root")
        };
        let alice_read_token = Principal {
            read_only: true,
            method: AuthMethod::AccessToken,
            ..alice.clone()
        };
        let alice_munge = Principal {
            read_only: true,
            method: AuthMethod::Munge,
            ..alice.clone()
        };
        let alice_bearer = Principal {
            method: AuthMethod::Bearer,
            grants: Some(vec![Grant {
                kind: "repository".into(),
                name: "alice/x".into(),
                actions: vec!["pull".into()],
            }]),
            ..alice.clone()
        };
        let library_user = user("library");
        let anon = Principal::anonymous();
        let p = policy(Anonymous::None);
        #[rustfmt::skip]
        let table: &[(&Principal, Action, &str, bool)] = &[
            (&alice, Pull, "alice/x", true),
            (&alice, Push, "alice/x", true),
            (&alice, Delete, "alice/deep/x", true),
            (&alice, Pull, "bob/x", false),
            (&alice, Push, "bob/x", false),
            (&bob, Pull, "alice/x", false),
            (&bob, Push, "alice/x", false),
            (&bob, Pull, "alicex/y", false),
            (&alice, Pull, "library/busybox", true),
            (&alice, Push, "library/busybox", false),
            (&library_user, Push, "library/busybox", false),
            (&admin, Push, "library/busybox", true),
            (&admin, Pull, "alice/x", true),
            (&admin, Delete, "bob/x", true),
            (&carol, Push, "proj-x/app", true),
            (&carol, Pull, "proj-x/app", true),
            (&dave, Pull, "proj-x/app", true),
            (&dave, Push, "proj-x/app", false),
            (&dave, Delete, "proj-x/app", false),
            (&bob, Pull, "proj-x/app", false),
            (&alice_read_token, Pull, "alice/x", true),
            (&alice_read_token, Push, "alice/x", false),
            (&alice_munge, Pull, "alice/x", true),
            (&alice_munge, Pull, "bob/x", false),
            (&alice_munge, Push, "alice/x", false),
            (&alice_bearer, Pull, "alice/x", true),
            (&alice_bearer, Push, "alice/x", false),
            (&alice_bearer, Pull, "alice/y", false),
            (&anon, Pull, "library/busybox", false),
            (&anon, Pull, "alice/x", false),
        ];
        for (who, action, repo, expected) in table {
            let repo = RepositoryName::parse(repo).unwrap();
            assert_eq!(
                p.may(who, *action, &repo),
                *expected,
                "{:?} {action:?} {repo}",
                who.user
            );
        }
    }

    #[test]
    fn anonymous_setting_is_a_floor_for_everyone() {
        let repo = RepositoryName::parse("alice/x").unwrap();
        let read = policy(Anonymous::Read);
        assert!(read.may(&Principal::anonymous(), Action::Pull, &repo));
        assert!(!read.may(&Principal::anonymous(), Action::Push, &repo));
        assert!(read.may(&user("bob"), Action::Pull, &repo));
        let dev = policy(Anonymous::ReadWrite);
        assert!(dev.may(&Principal::anonymous(), Action::Delete, &repo));
    }

    #[test]
    fn push_namespaces_for_messages() {
        let p = policy(Anonymous::None);
        let carol = Principal {
            groups: vec![
                Membership {
                    group: "proj-x".into(),
                    read_only: false,
                },
                Membership {
                    group: "proj-y".into(),
                    read_only: true,
                },
            ],
            ..user("carol")
        };
        assert_eq!(p.push_namespaces(&carol), vec!["carol", "proj-x"]);
        assert!(p.push_namespaces(&Principal::anonymous()).is_empty());
    }
}
