//! The integration suite: one test binary (one link step) whose modules each cover one capability.
//! Every test starts the real server on a loopback port and talks to it with real clients.

mod support;

mod audit;
mod auth;
mod bad_input;
mod bench_nodes;
mod clients;
mod compute_node;
mod conformance;
mod durability;
mod edge;
mod enroot_backfill;
mod farm;
mod farm_isolation;
mod farm_limits;
mod farm_queue;
mod farm_remote;
mod farm_slurm;
mod jobscript;
mod lifecycle;
mod migrations;
mod node_cluster;
mod node_slurm;
mod notifications;
mod operations;
mod quota;
mod security_auth;
mod slurm;
mod storage_faults;
mod ui;
mod ui_browser;
