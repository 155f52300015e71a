//! Online garbage collection, retention policies and repository deletes.
//!
//! - `settings.rs`: the `[gc]` and `[[retention]]` config, parsed and validated once.
//! - `retention.rs`: which tags a policy deletes, and why (pure, unit-tested).
//! - `gc.rs`: the [`Pruner`]: retention (a prune; a GC skips it), then the sweep of unanchored
//!   manifests, orphaned SIFs, unreferenced blobs and stale uploads; a dry run is the same code
//!   rolled back.
//! - `schedule.rs`: the background prune (interval and time window).
//! - `scrub.rs`: re-hashing every stored blob, quarantining corrupt ones (SIFs are rebuilt).
//! - `throttle.rs`: the rate limit of both (bytes read, blobs deleted per second).
//!
//! Nothing stops the registry meanwhile: every step is a short transaction, and the blob state
//! protocol ('live' → 'deleting' → gone) keeps concurrent pushes consistent. The long runs (GC,
//! prune, scrub) report to a [`Watch`]: a background job (`crate::admin_jobs`) saves their
//! checkpoints and asks them to stop; a plain call passes [`NoWatch`].

pub mod gc;
pub mod retention;
pub mod schedule;
pub mod scrub;
pub mod settings;
pub mod throttle;

pub use gc::{Action, Pruner, Report, RepositoryDeleted};
pub use settings::Settings;

/// What a long run (GC, prune, scrub) wants along the way: whether to stop, and somewhere to
/// save where it stands (`C`, its checkpoint), so that a restarted server can resume it.
pub trait Watch<C> {
    /// Asked between steps (a GC's batches, a scrub's blobs): `true` stops the run there.
    fn cancelled(&self) -> bool;
    /// Saves `at` in a transaction of its own.
    fn checkpoint(&mut self, at: &C);
    /// Saves `at` inside `tx`, the transaction of the step it follows: the step and the
    /// checkpoint that says it is done commit together, so a resume neither repeats nor loses it.
    fn checkpoint_in(&mut self, tx: &crate::meta::Tx, at: &C);
}

/// The watch of a run nobody follows: never cancelled, checkpoints dropped.
pub struct NoWatch;

impl<C> Watch<C> for NoWatch {
    fn cancelled(&self) -> bool {
        false
    }
    fn checkpoint(&mut self, _: &C) {}
    fn checkpoint_in(&mut self, _: &crate::meta::Tx, _: &C) {}
}

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
