//! Live reload: SIGHUP, or `hpc-registry admin reload` (`POST /admin/reload`), re-reads the
//! configuration and applies what can change without a restart: retention and GC settings
//! (`[gc]`, `[[retention]]`), quota defaults (`[quota]`), audit rotation and forwarding
//! (`[audit]`), the batch-script generator's site templates (`[[ui.templates]]`), the log level
//! (`[log] level`) and the TLS certificate and key (`[tls]`, the same paths re-read).
//! Connections stay open throughout: nothing here touches the listener.
//!
//! All or nothing: every section is parsed and checked first (a config that does not parse, a
//! bad duration, a certificate that does not match its key), and only when all of them are
//! valid is anything applied. A refused reload is logged and answered with the reason; the
//! running configuration stays. Sections that changed but need a restart (`listen`, `[farm]`,
//! `[auth]`, …) are named in the answer and the log, and keep their running values.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::audit::rotation::Policy;
use crate::audit::Auditor;
use crate::config::Config;
use crate::jobscript::{LiveTemplates, Template};
use crate::lifecycle::{Pruner, Settings};
use crate::quota::{LiveDefaults, QuotaDefaults};
use crate::tls::CertReloader;

/// Re-reads the configuration the server was started with (its file, environment and flags).
pub type ConfigSource = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// Sections applied (whether or not they changed).
    pub applied: Vec<&'static str>,
    /// Sections that changed in the file but only take effect at the next start.
    pub restart_needed: Vec<&'static str>,
}

impl Outcome {
    /// Logs a reload that was applied, and what it left for a restart.
    pub fn log(&self) {
        tracing::info!(
            applied = ?self.applied,
            restart_needed = ?self.restart_needed,
            "configuration reloaded"
        );
        if !self.restart_needed.is_empty() {
            tracing::warn!(
                "changed settings that only take effect after a restart: {}",
                self.restart_needed.join(", ")
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration refused, the running one stays: {0}")]
pub struct Refused(pub String);

/// The parts of a running server a reload changes.
pub struct Live {
    pub pruner: Arc<Pruner>,
    pub quotas: LiveDefaults,
    pub audit: Auditor,
    /// `None`: the server serves plain HTTP.
    pub tls: Option<CertReloader>,
    pub templates: LiveTemplates,
}

/// Re-reads the configuration and applies it to the [`Live`] parts.
pub struct Reloader {
    source: Option<ConfigSource>,
    running: Mutex<Config>,
    live: Live,
}

/// Everything parsed and checked, nothing applied yet.
struct Prepared {
    gc: Settings,
    quota: QuotaDefaults,
    rotation: Policy,
    forward: Option<crate::audit::forward::Target>,
    templates: Vec<Template>,
    log: tracing_subscriber::EnvFilter,
    cert: Option<crate::tls::PendingCert>,
}

impl Reloader {
    pub fn new(source: Option<ConfigSource>, running: Config, live: Live) -> Reloader {
        Reloader {
            source,
            running: Mutex::new(running),
            live,
        }
    }

    /// Re-reads and applies the configuration (blocking: it reads files). One at a time.
    pub fn reload(&self) -> Result<Outcome, Refused> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(source) = &self.source else {
            return Err(Refused(
                "the server was started without a way to re-read its configuration".into(),
            ));
        };
        let new = source().map_err(|e| Refused(format!("{e:#}")))?;
        let prepared = self.settings_of(&new)?;
        let live = &self.live;
        live.pruner.set_settings(prepared.gc);
        live.quotas.set(prepared.quota);
        live.audit.set_rotation(prepared.rotation);
        live.audit.set_forward(prepared.forward);
        live.templates.set(prepared.templates);
        if let Err(e) = crate::logging::set_level(prepared.log) {
            tracing::warn!("reload: the log level stays: {e}");
        }
        let mut applied = vec!["gc", "retention", "quota", "audit", "ui.templates", "log"];
        if let (Some(reloader), Some(cert)) = (&live.tls, prepared.cert) {
            reloader.apply(cert);
            applied.push("tls");
        }
        let restart_needed = needs_restart(&running, &new);
        // What the running server now uses: the reloaded sections new, the others as started.
        let mut now = running.clone();
        now.gc = new.gc;
        now.retention = new.retention;
        now.quota = new.quota;
        now.audit = new.audit;
        now.ui.templates = new.ui.templates;
        now.log = new.log;
        if live.tls.is_some() {
            now.tls = new.tls;
        }
        *running = now;
        Ok(Outcome {
            applied,
            restart_needed,
        })
    }

    fn settings_of(&self, new: &Config) -> Result<Prepared, Refused> {
        let gc =
            Settings::from_config(&new.gc, &new.retention).map_err(|e| Refused(e.to_string()))?;
        let quota =
            QuotaDefaults::from_config(&new.quota).map_err(|e| Refused(format!("[quota]: {e}")))?;
        let rotation = Policy::from_config(&new.audit).map_err(Refused)?;
        let forward = crate::audit::forward::Target::from_config(
            new.audit.syslog.as_deref(),
            new.audit.syslog_facility.as_deref(),
        )
        .map_err(Refused)?;
        let templates =
            crate::jobscript::templates_from_config(&new.ui).map_err(|e| Refused(e.to_string()))?;
        let log = crate::logging::parse_level(new.log.level.as_deref()).map_err(Refused)?;
        let cert = match (&self.live.tls, crate::tls::files(&new.tls)) {
            (Some(_), Some((cert, key))) => Some(
                CertReloader::prepare(&cert, &key).map_err(|e| Refused(format!("[tls]: {e:#}")))?,
            ),
            (Some(_), None) => {
                return Err(Refused(
                    "[tls]: the server serves HTTPS; a reload cannot turn it off (restart instead)"
                        .into(),
                ))
            }
            (None, _) => None,
        };
        Ok(Prepared {
            gc,
            quota,
            rotation,
            forward,
            templates,
            log,
            cert,
        })
    }
}

/// The sections that differ between `old` and `new` but are not reloadable.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    fn differs<T: Serialize>(a: &T, b: &T) -> bool {
        serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
    }
    let mut out = Vec::new();
    for (name, changed) in [
        ("listen", old.listen != new.listen),
        ("data_dir", old.data_dir != new.data_dir),
        ("server", differs(&old.server, &new.server)),
        ("registry", differs(&old.registry, &new.registry)),
        ("auth", differs(&old.auth, &new.auth)),
        ("farm", differs(&old.farm, &new.farm)),
        ("scrub", differs(&old.scrub, &new.scrub)),
        ("health", differs(&old.health, &new.health)),
        (
            "ui.session",
            (old.ui.session_idle_secs, old.ui.session_max_secs)
                != (new.ui.session_idle_secs, new.ui.session_max_secs),
        ),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_reloadable_changes_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.quota.default_user = Some("1GiB".into());
        new.log.level = Some("debug".into());
        new.ui.templates.push(crate::config::TemplateConfig {
            name: "tiny".into(),
            partition: None,
            cpus: 1,
            memory: "100M".into(),
            time: "00:05:00".into(),
            gres: None,
        });
        assert!(needs_restart(&old, &new).is_empty());
        new.farm.workers += 1;
        new.listen = "127.0.0.1:1".parse().unwrap();
        assert_eq!(needs_restart(&old, &new), ["listen", "farm"]);
    }
}
