//! One typed configuration: embedded defaults ← TOML file ← `HPC_REGISTRY_*` environment ←
//! command-line flags (clap merges the last two; see `main.rs`).
//!
//! Plain data only, as the file says it: this module names no other module of the crate. Each
//! module builds (and validates) its own types from its section: `auth::Access::new`,
//! `quota::QuotaDefaults::from_config`, `lifecycle::Settings::from_config`,
//! `listener::Bounds::from_config`, `lifecycle::scrub::Scrubber::new`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod notifications;
pub use notifications::*;
mod executor;
pub use executor::{Executor, SlurmConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. The default keeps a fresh install private to the machine.
    pub listen: SocketAddr,
    /// Blobs, uploads, the metadata database and SIFs live here.
    pub data_dir: PathBuf,
    /// `[server]`: connection bounds.
    pub server: ServerConfig,
    pub registry: RegistryConfig,
    pub auth: AuthConfig,
    pub farm: FarmConfig,
    pub tls: TlsConfig,
    /// `[quota]`: default namespace quotas.
    pub quota: QuotaConfig,
    /// `[scrub]`: re-hashing the store.
    pub scrub: ScrubConfig,
    /// Online garbage collection (`[gc]`).
    pub gc: GcConfig,
    /// Retention policies (`[[retention]]`), applied by every prune.
    pub retention: Vec<RetentionRule>,
    /// `[health]`: what `/readyz` requires.
    pub health: HealthConfig,
    /// `[ui]`: the web UI's sessions and the batch-script generator's site templates.
    pub ui: UiConfig,
    /// `[notifications]`: mail and webhooks when a SIF is ready or failed.
    pub notifications: NotificationsConfig,
    /// `[audit]`: rotation of the audit file.
    pub audit: AuditConfig,
    /// `[log]`: the log level (re-read on reload).
    pub log: LogConfig,
}

/// Online garbage collection (`[gc]`). Durations are written like `90s`, `30m`, `2h`, `7d`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Unreferenced blobs, manifests and SIFs (and upload sessions) older than this are swept.
    pub grace: String,
    /// How often the background prune runs; `0s` turns it off (then only `admin prune` runs it).
    pub interval: String,
    /// Optional UTC time window for the background prune, e.g. `01:00-05:00` (may wrap midnight).
    pub window: Option<String>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            grace: "2h".to_owned(),
            interval: "6h".to_owned(),
            window: None,
        }
    }
}

/// One retention policy (`[[retention]]`) for the repositories matching `namespaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionRule {
    /// Glob on repository names: `alice/*`, `proj-*/**`, `*` (`*` also crosses `/`).
    pub namespaces: String,
    /// Keep the N most recently pushed tags of each repository; older ones are deleted.
    pub keep_last: Option<usize>,
    /// Tags matching any of these globs are always kept.
    pub keep_tags: Vec<String>,
    /// Untagged manifests go this long after losing their last tag (at least the grace period).
    pub untagged_after: Option<String>,
    /// Tags whose image was neither pushed, pulled nor SIF-fetched for this long are deleted.
    pub unused_after: Option<String>,
}

/// The SIF build farm (`[farm]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FarmConfig {
    /// In-process build workers; 0 disables them (remote builders only). Default: half the cores, at least 1.
    pub workers: usize,
    /// Platforms that get a SIF, as os/arch[/variant]; the first is the default platform.
    pub platforms: Vec<String>,
    /// `native` (built in, no external tools) or `apptainer` (runs `apptainer build`).
    pub backend: Backend,
    /// Path or name of the apptainer executable for the `apptainer` backend.
    pub apptainer: PathBuf,
    /// squashfs compression: `gzip` (what apptainer writes, works everywhere) or `zstd`.
    pub compression: CompressionName,
    /// Compression level; default 9 for gzip (apptainer's), 3 for zstd.
    pub compression_level: Option<i32>,
    /// Compression threads per build; 0 means all cores.
    pub threads: usize,
    /// A build fails once the image unpacks to more than this (decompression-bomb guard).
    pub max_unpacked_bytes: u64,
    /// A build fails once its layers hold more tar entries than this (whiteouts included).
    pub max_entries: u64,
    /// Largest PAX extended header or GNU long name/link record of one entry.
    pub max_extension_bytes: u64,
    /// Xattr bytes (names and values) one entry may carry.
    pub max_xattr_bytes_per_entry: u64,
    /// Xattr bytes a whole image may carry.
    pub max_xattr_bytes: u64,
    /// Bytes of entry names and symlink targets a whole image may carry.
    pub max_name_bytes: u64,
    /// Deepest path (in components) an entry may have.
    pub max_path_depth: usize,
    /// Bytes a build may write to its scratch directory (unpacked files, squashfs, SIF).
    pub max_scratch_bytes: u64,
    /// Largest image config blob read (on the planner's and `/sif`'s platform checks and builds).
    pub max_config_bytes: u64,
    /// Byte-identical SIFs for the same image: nil UUID, times from the image's `created`.
    pub reproducible: bool,
    /// Attempts before a job is marked failed for good.
    pub max_attempts: i64,
    /// Wait before retrying a failed attempt.
    pub retry_delay_secs: i64,
    /// A worker that has not heart-beaten for this long loses its job to another.
    pub lease_secs: i64,
    /// Memory one build process may use (under `cgroup`: `memory.max` on cgroup v2,
    /// `memory.limit_in_bytes` and as much `memory.memsw.limit_in_bytes` on cgroup v1; else
    /// `RLIMIT_AS`); a build over it fails with that reason and is retried. 0: no limit.
    pub max_memory_bytes: u64,
    /// Wall-clock time one build may take before its process is killed.
    pub build_timeout_secs: u64,
    /// Niceness of build processes (serving runs at 0).
    pub nice: i32,
    /// Run build processes under `SCHED_IDLE`: they get CPU only when nothing else wants it.
    pub sched_idle: bool,
    /// A cgroup directory delegated to the service's user, on either hierarchy (told apart by
    /// its files): cgroup v2 (`memory` in its `cgroup.controllers`, no process of its own;
    /// systemd `Delegate=memory` with `DelegateSubgroup=`), or cgroup v1's memory hierarchy
    /// (systemd `Delegate=yes`, or a directory root made and handed over). Each build gets a
    /// child cgroup there with `max_memory_bytes` as its limit, joined before `exec`, killed and
    /// removed after; `RLIMIT_AS` is then not set.
    pub cgroup: Option<PathBuf>,
    /// Where builds run: `local`, `remote` (builder hosts only) or `slurm`.
    pub executor: Executor,
    /// Largest SIF a remote builder may upload.
    pub max_sif_bytes: u64,
    /// How long a remote builder's claim waits for a job before answering "none".
    pub claim_wait_secs: u64,
    /// `[farm.slurm]`, for `executor = "slurm"`.
    pub slurm: SlurmConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Native,
    Apptainer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionName {
    Gzip,
    Zstd,
}

impl Default for FarmConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        FarmConfig {
            workers: (cores / 2).max(1),
            platforms: vec!["linux/amd64".to_owned()],
            backend: Backend::Native,
            apptainer: PathBuf::from("apptainer"),
            compression: CompressionName::Gzip,
            compression_level: None,
            threads: 0,
            max_unpacked_bytes: 64 << 30,
            max_entries: oci2sif::layers::LimitSettings::DEFAULT.max_entries,
            max_extension_bytes: oci2sif::layers::LimitSettings::DEFAULT.max_extension_bytes,
            max_xattr_bytes_per_entry: oci2sif::layers::LimitSettings::DEFAULT
                .max_xattr_bytes_per_entry,
            max_xattr_bytes: oci2sif::layers::LimitSettings::DEFAULT.max_xattr_bytes,
            max_name_bytes: oci2sif::layers::LimitSettings::DEFAULT.max_name_bytes,
            max_path_depth: oci2sif::layers::LimitSettings::DEFAULT.max_path_depth,
            max_scratch_bytes: 160 << 30,
            max_config_bytes: 4 << 20,
            reproducible: true,
            max_attempts: 3,
            retry_delay_secs: 30,
            lease_secs: 60,
            max_memory_bytes: 4 << 30,
            build_timeout_secs: 2 * 3600,
            nice: 10,
            sched_idle: false,
            cgroup: None,
            executor: Executor::Local,
            max_sif_bytes: 64 << 30,
            claim_wait_secs: 20,
            slurm: SlurmConfig::default(),
        }
    }
}

/// Connection bounds (`[server]`): what one client may hold of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// A request head (request line and headers) must arrive within this once it has begun.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight is closed after this.
    pub keep_alive_timeout_secs: u64,
    /// A request body that sends nothing for this long fails (an upload stays resumable).
    pub body_idle_timeout_secs: u64,
    /// Connections served at once; more wait in the accept queue. Keep it well below the
    /// descriptor limit (`LimitNOFILE` in the unit file).
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        // nginx's defaults are 60 s (header), 75 s (keep-alive) and 60 s (body); 30 s for the
        // head is what hyper uses and ample for any client that means to send one.
        ServerConfig {
            header_read_timeout_secs: 30,
            keep_alive_timeout_secs: 75,
            body_idle_timeout_secs: 60,
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Largest manifest accepted (the spec asks for at least 4 MiB); larger ones get 413.
    pub max_manifest_bytes: usize,
    /// Upload sessions untouched for this long are removed.
    pub upload_expiry_secs: u64,
    /// Upload sessions one user may have open at once; 0: no limit.
    pub max_upload_sessions_per_user: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// What unauthenticated callers may do: `none` (default), `read` or `read-write`.
    pub anonymous: Anonymous,
    /// Namespaces every authenticated user may pull from and only admins push to.
    pub public: Vec<String>,
    /// Accept `Authorization: MUNGE <credential>` on pulls (needs a local munged).
    pub munge: bool,
    /// The `unmunge` program that decodes MUNGE credentials.
    pub unmunge: PathBuf,
    /// munged's socket, if not the default.
    pub munge_socket: Option<PathBuf>,
    /// A MUNGE uid with no registry user may claim the registry user named like its host
    /// account when that user has no uid (never with admin rights). Off: only `--uid` maps.
    pub munge_match_names: bool,
    /// Lifetime of the bearer tokens `/token` issues.
    pub token_ttl_secs: u64,
    /// Failed password logins for one user name from one client address allowed in one window;
    /// 0: no limit. (Access tokens, bearer tokens and MUNGE are not limited: they cannot be guessed.)
    pub max_failed_logins: u32,
    /// Failed logins from one client address in one window (higher: a login node's address is
    /// shared by all its users); 0: no limit.
    pub max_failed_logins_per_address: u32,
    /// The window of `max_failed_logins`; a blocked client waits at most this long.
    pub failed_login_window_secs: u64,
    /// Users are also members of the host's POSIX groups of the account with their name
    /// (getgrouplist, so LDAP/SSSD groups too), and share `<group>/…` with the other members.
    pub posix_groups: bool,
    /// Only host groups with at least this gid count (system groups stay out).
    pub posix_groups_min_gid: u32,
    /// Password verifications (argon2id, 19 MiB each) running at once; more logins queue.
    /// 0: half the cores, at least 1.
    pub password_hashing_threads: usize,
    /// A password verified for Basic auth is not verified again for this long (as long as the
    /// user's stored hash is unchanged); 0: verify on every request.
    pub credential_cache_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous: Anonymous::None,
            public: vec!["library".to_owned()],
            munge: false,
            unmunge: PathBuf::from("unmunge"),
            munge_socket: None,
            munge_match_names: false,
            token_ttl_secs: 300,
            max_failed_logins: 10,
            max_failed_logins_per_address: 50,
            failed_login_window_secs: 300,
            posix_groups: false,
            posix_groups_min_gid: 1000,
            password_hashing_threads: 0,
            credential_cache_secs: 60,
        }
    }
}

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

/// `[quota]`: defaults for namespaces without an admin-set override. Unset: unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Limit of every user's namespace, e.g. "50GiB".
    pub default_user: Option<String>,
    /// Limit of every group's namespace, e.g. "1TiB".
    pub default_group: Option<String>,
}

/// `[scrub]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrubConfig {
    /// Read rate limit, e.g. "200MiB" (per second).
    pub rate: String,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            rate: "200MiB".into(),
        }
    }
}

/// HTTPS (`[tls]`): both files or neither.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("registry-data"),
            server: ServerConfig::default(),
            registry: RegistryConfig::default(),
            auth: AuthConfig::default(),
            farm: FarmConfig::default(),
            tls: TlsConfig::default(),
            gc: GcConfig::default(),
            retention: Vec::new(),
            quota: Default::default(),
            scrub: Default::default(),
            health: HealthConfig::default(),
            ui: UiConfig::default(),
            notifications: NotificationsConfig::default(),
            audit: AuditConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            upload_expiry_secs: 24 * 3600,
            // Clients upload a few layers in parallel (docker 3, skopeo 6 by default).
            max_upload_sessions_per_user: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("--dev opens anonymous read-write access and is only allowed on a loopback address, not {0}; use --listen 127.0.0.1:PORT")]
    DevNotLoopback(SocketAddr),
}

impl Config {
    /// Reads a TOML config file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Turns on development mode: anonymous read-write, refused unless listening on loopback.
    pub fn enable_dev_mode(&mut self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(ConfigError::DevNotLoopback(self.listen));
        }
        self.auth.anonymous = Anonymous::ReadWrite;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "listen = \"0.0.0.0:5001\"\n[registry]\nmax_manifest_bytes = 10\n",
        )
        .unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.listen.port(), 5001);
        assert_eq!(c.registry.max_manifest_bytes, 10);
        assert_eq!(c.data_dir, PathBuf::from("registry-data"));
        let mut c2 = c.clone();
        assert!(matches!(
            c2.enable_dev_mode(),
            Err(ConfigError::DevNotLoopback(_))
        ));
        std::fs::write(&p, "lisen = \"x\"\n").unwrap();
        assert!(Config::from_file(&p).is_err());
    }
}

/// `[health]`: the readiness thresholds of `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Not ready when the data directory's filesystem has this much free or less, e.g. "10GiB":
    /// a push that cannot be stored should go to another replica, not fail half-way.
    pub min_free: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            min_free: "1GiB".to_owned(),
        }
    }
}

/// `[ui]`: the web UI (sessions) and the site templates of the batch-script generator
/// (`[[ui.templates]]`). `jobscript::templates_from_config` validates the templates at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// The generator's templates; none given: `small`, `medium`, `large` and `gpu`.
    pub templates: Vec<TemplateConfig>,
    /// A UI session unused for this long ends.
    pub session_idle_secs: u64,
    /// A UI session ends this long after its login, used or not.
    pub session_max_secs: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            templates: Vec::new(),
            session_idle_secs: 3600,
            session_max_secs: 12 * 3600,
        }
    }
}

/// `[audit]`: rotation of `DATA/audit/audit.jsonl` (unset: never rotated), and forwarding of
/// every record to the host's syslog (unset: not forwarded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Rotate once the active file reaches this size, e.g. "100MiB".
    pub rotate_bytes: Option<String>,
    /// Rotate once the active file's first record is this old, e.g. "1d".
    pub rotate_age: Option<String>,
    /// How rotated files are compressed: "zstd" (default), "gzip" or "none".
    pub compress: String,
    /// Also send every record to this syslog socket, e.g. "/dev/log" (journald, rsyslog).
    pub syslog: Option<String>,
    /// The syslog facility of forwarded records: "authpriv" (default), "auth", "daemon",
    /// "local0" … "local7", …
    pub syslog_facility: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            rotate_bytes: None,
            rotate_age: None,
            compress: "zstd".to_owned(),
            syslog: None,
            syslog_facility: None,
        }
    }
}

/// One `[[ui.templates]]` entry: the resources a batch script asks Slurm for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub name: String,
    /// `#SBATCH --partition`; none: the cluster's default partition.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--cpus-per-task`.
    pub cpus: u32,
    /// `--mem`, as Slurm writes it: `4G`, `500M`.
    pub memory: String,
    /// `--time`, as Slurm writes it: `60`, `04:00:00`, `1-12`.
    pub time: String,
    /// `--gres`, e.g. `gpu:1` or `gpu:a100:1`.
    #[serde(default)]
    pub gres: Option<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as "info" or "info,hpc_registry::farm=debug"; unset: the
    /// `HPC_REGISTRY_LOG` variable, else "info". Applied at start and by every reload.
    pub level: Option<String>,
}
