//! hpc-registry: an OCI distribution-spec v1.1 registry for HPC sites that turns every pushed
//! image into a ready-to-run Apptainer SIF. See ARCHITECTURE.md for the map of the modules.

pub mod admin_jobs;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod builder;
pub mod cli;
pub mod client;
pub mod config;
pub mod farm;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod jobscript;
pub mod lifecycle;
pub mod listener;
pub mod lock;
pub mod logging;
pub mod memory;
pub mod meta;
pub mod names;
pub mod node_cache;
pub mod notifications;
pub mod notify;
pub mod quota;
pub mod registry;
pub mod reload;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod timefmt;
pub mod tls;
pub mod ui;
pub mod urlcode;
pub mod writeback;
