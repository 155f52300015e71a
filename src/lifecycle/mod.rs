//! Online garbage collection, retention policies and repository deletes.
//!
//! - `settings.rs`: the `[gc]` and `[[retention]]` config, parsed and validated once.
//! - `retention.rs`: which tags a policy deletes, and why (pure, unit-tested).
//! - `gc.rs`: the [`Pruner`]: retention, then the sweep of unanchored manifests, orphaned SIFs,
//!   unreferenced blobs and stale uploads; a dry run is the same code rolled back.
//! - `schedule.rs`: the background prune (interval and time window).
//! - `scrub.rs`: re-hashing every stored blob, quarantining corrupt ones (SIFs are rebuilt).
//!
//! Nothing stops the registry meanwhile: every step is a short transaction, and the blob state
//! protocol ('live' → 'deleting' → gone) keeps concurrent pushes consistent.

pub mod gc;
pub mod retention;
pub mod schedule;
pub mod scrub;
pub mod settings;

pub use gc::{Action, Pruner, Report, RepositoryDeleted};
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("invalid [gc]/[[retention]] configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("repository {0} does not exist")]
    NoSuchRepository(String),
    #[error("{0}")]
    Registry(String),
    #[error("prune task failed: {0}")]
    Task(String),
}
