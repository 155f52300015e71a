//! Per-namespace storage quotas: which limit applies, and whether a push fits under it.
//!
//! A namespace's usage is blobs linked into any of its repositories (each digest once, SIFs
//! included) plus manifest bytes. Checks read the counters `meta::counted_usage` keeps in the
//! same transactions as the links and manifests they count (one row, whatever the namespace's
//! size); `meta::namespace_usage` is the full recount the scrub proves them against. Checks run
//! inside the write transaction that commits the blob or manifest, so two concurrent pushes
//! cannot both slip under the limit: SQLite serialises writers, and the check sees every commit
//! that came before.
//!
//! SIFs built by the registry are counted but never refused: a build is not the user's push, and
//! failing it would leave an image without its SIF for a reason the user cannot see.

pub mod size;

use std::sync::Arc;

use serde::Serialize;

use crate::config::QuotaConfig;
use crate::meta::{self, Conn, Db, QuotaRow};
pub use size::{format_size, parse_size, SizeError};

/// The parsed defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaDefaults {
    pub user: Option<u64>,
    pub group: Option<u64>,
}

impl QuotaDefaults {
    /// Parses `[quota]`.
    pub fn from_config(config: &QuotaConfig) -> Result<QuotaDefaults, SizeError> {
        let parse = |v: &Option<String>| v.as_deref().map(parse_size).transpose();
        Ok(QuotaDefaults {
            user: parse(&config.default_user)?,
            group: parse(&config.default_group)?,
        })
    }
}

/// The defaults as the server holds them: shared by every user of them, replaced at once by a
/// reload (`[quota]` re-read).
#[derive(Debug, Clone, Default)]
pub struct LiveDefaults(Arc<std::sync::RwLock<QuotaDefaults>>);

impl LiveDefaults {
    pub fn new(defaults: QuotaDefaults) -> LiveDefaults {
        LiveDefaults(Arc::new(std::sync::RwLock::new(defaults)))
    }

    /// The defaults now (a copy: a push checks against one set throughout).
    pub fn get(&self) -> QuotaDefaults {
        *self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, defaults: QuotaDefaults) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = defaults;
    }
}

/// Where a namespace's limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// Set by an admin (`admin quota set`).
    Override,
    DefaultUser,
    DefaultGroup,
    /// No override and no default applies.
    None,
}

/// The limit of a namespace (`None`: unlimited) and where it comes from.
pub fn limit_for(
    conn: &Conn,
    defaults: &QuotaDefaults,
    namespace: &str,
) -> meta::Result<(Option<u64>, LimitSource)> {
    if let Some(row) = meta::quota_row(conn, namespace)? {
        return Ok((
            row.limit_bytes.map(|l| l.max(0) as u64),
            LimitSource::Override,
        ));
    }
    Ok(match meta::namespace_owner_is_user(conn, namespace)? {
        Some(true) if defaults.user.is_some() => (defaults.user, LimitSource::DefaultUser),
        Some(false) if defaults.group.is_some() => (defaults.group, LimitSource::DefaultGroup),
        _ => (None, LimitSource::None),
    })
}

/// A push refused for its namespace's quota. The message is the one clients show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota {} for {namespace} exceeded: {} used, push needs {}", format_size(*.limit), format_size(*.used), format_size(*.needs))]
pub struct Exceeded {
    pub namespace: String,
    pub limit: u64,
    pub used: u64,
    pub needs: u64,
}

/// Whether `needs` more bytes fit in `namespace`. Nothing new (`needs == 0`: a digest the
/// namespace already holds) always fits, even over the limit, so re-tags and re-pushes work.
pub fn check(
    conn: &Conn,
    defaults: &QuotaDefaults,
    namespace: &str,
    needs: u64,
) -> meta::Result<Result<(), Exceeded>> {
    if needs == 0 {
        return Ok(Ok(()));
    }
    let (Some(limit), _) = limit_for(conn, defaults, namespace)? else {
        return Ok(Ok(()));
    };
    let used = meta::counted_usage(conn, namespace)?.max(0) as u64;
    if used.saturating_add(needs) > limit {
        crate::telemetry::quota_rejected();
        return Ok(Err(Exceeded {
            namespace: namespace.to_owned(),
            limit,
            used,
            needs,
        }));
    }
    Ok(Ok(()))
}

/// What a commit stores in a namespace, by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored<'a> {
    /// A blob linked into one of the namespace's repositories.
    Blob(&'a str),
    /// A manifest stored in one of them.
    Manifest(&'a str),
}

/// [`check`] for storing `what`, of `size` bytes, in `namespace`: free when the namespace
/// already holds that digest.
pub fn check_stored(
    conn: &Conn,
    defaults: &QuotaDefaults,
    namespace: &str,
    what: Stored,
    size: u64,
) -> meta::Result<Result<(), Exceeded>> {
    let held = match what {
        Stored::Blob(digest) => meta::blob_linked_in_namespace(conn, namespace, digest)?,
        Stored::Manifest(digest) => meta::manifest_in_namespace(conn, namespace, digest)?,
    };
    check(conn, defaults, namespace, if held { 0 } else { size })
}

/// Usage of a namespace together with its limit, as the admin API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    #[serde(flatten)]
    pub usage: meta::NamespaceUsage,
    pub total_bytes: i64,
    /// `None`: unlimited.
    pub quota_bytes: Option<u64>,
    pub quota_source: LimitSource,
}

/// Usage (and limits) of one namespace or all; a namespace with a quota but no repository yet
/// is reported with zero usage when asked for by name.
pub fn usage_report(
    conn: &Conn,
    defaults: &QuotaDefaults,
    namespace: Option<&str>,
) -> meta::Result<Vec<UsageReport>> {
    let mut usages = meta::namespace_usage(conn, namespace)?;
    if let (Some(ns), true) = (namespace, usages.is_empty()) {
        usages.push(meta::NamespaceUsage {
            namespace: ns.to_owned(),
            ..Default::default()
        });
    }
    usages
        .into_iter()
        .map(|usage| {
            let (quota_bytes, quota_source) = limit_for(conn, defaults, &usage.namespace)?;
            Ok(UsageReport {
                total_bytes: usage.total(),
                usage,
                quota_bytes,
                quota_source,
            })
        })
        .collect()
}

/// The quota operations of the admin API, in plain types: handlers authorise and translate,
/// this reads and writes.
pub struct Quotas {
    db: Arc<Db>,
    defaults: LiveDefaults,
}

impl Quotas {
    pub fn new(db: Arc<Db>, defaults: LiveDefaults) -> Quotas {
        Quotas { db, defaults }
    }

    /// The configured defaults (`[quota]`).
    pub fn defaults(&self) -> QuotaDefaults {
        self.defaults.get()
    }

    /// Usage reports of every namespace (`None`), or of each listed one.
    pub async fn usage(&self, namespaces: Option<Vec<String>>) -> meta::Result<Vec<UsageReport>> {
        let defaults = self.defaults.get();
        self.db
            .read(move |c| match namespaces {
                None => usage_report(c, &defaults, None),
                Some(list) => {
                    let mut out = Vec::new();
                    for ns in list {
                        out.extend(usage_report(c, &defaults, Some(&ns))?);
                    }
                    Ok(out)
                }
            })
            .await
    }

    /// The usage report of one namespace (zero usage if it has no repository yet).
    pub async fn report(&self, namespace: String) -> meta::Result<Option<UsageReport>> {
        Ok(self.usage(Some(vec![namespace])).await?.pop())
    }

    /// The admin-set overrides.
    pub async fn overrides(&self) -> meta::Result<Vec<QuotaRow>> {
        self.db.read(meta::list_quotas).await
    }

    /// Sets `namespace`'s override (`None`: unlimited), recording who set it.
    pub async fn set(&self, namespace: String, limit: Option<i64>, by: String) -> meta::Result<()> {
        self.db
            .write(move |tx| meta::set_quota(tx, &namespace, limit, &by))
            .await
    }

    /// Drops `namespace`'s override; whether there was one.
    pub async fn clear(&self, namespace: String) -> meta::Result<bool> {
        self.db
            .write(move |tx| meta::clear_quota(tx, &namespace))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_limit_usage_and_need() {
        let e = Exceeded {
            namespace: "alice".into(),
            limit: 50 << 30,
            used: (498u64 << 30) / 10 + 5,
            needs: 600 << 20,
        };
        assert_eq!(
            e.to_string(),
            "quota 50 GiB for alice exceeded: 49.8 GiB used, push needs 600 MiB"
        );
    }
}
