//! Who is calling and what they may do. Every route asks [`Access::check`] before acting.
//!
//! Today the only identities are anonymous callers, governed by the `anonymous` setting; user
//! accounts, tokens and MUNGE plug in here without the routes changing.

use serde::{Deserialize, Serialize};

use crate::registry::error::Error;
use crate::registry::names::RepositoryName;

/// What anonymous (unauthenticated) callers may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Anonymous {
    /// Nothing: every request must authenticate (the default).
    #[default]
    None,
    /// Pull only.
    Read,
    /// Pull, push and delete: only for `--dev` on loopback, or a deliberately open site.
    ReadWrite,
}

/// An action on a repository, as in Docker token scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

/// The caller, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
}

pub struct Access {
    anonymous: Anonymous,
}

impl Access {
    pub fn new(anonymous: Anonymous) -> Self {
        Access { anonymous }
    }

    /// Authenticates the request and checks `action` on `repo` (`None`: registry-wide routes).
    pub fn check(
        &self,
        _headers: &axum::http::HeaderMap,
        repo: Option<&RepositoryName>,
        action: Action,
    ) -> Result<Principal, Error> {
        let allowed = matches!(
            (self.anonymous, action),
            (Anonymous::ReadWrite, _) | (Anonymous::Read, Action::Pull)
        );
        if allowed {
            Ok(Principal::Anonymous)
        } else {
            let what = repo.map(|r| format!(" on {r}")).unwrap_or_default();
            Err(Error::Unauthorized(format!(
                "authentication required for {action:?}{what}: log in with `docker login`"
            )))
        }
    }

    /// Whether the caller may see `repository` in listings.
    pub fn may_list(&self, _principal: &Principal, _repository: &str) -> bool {
        self.anonymous != Anonymous::None
    }
}
